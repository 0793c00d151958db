"""Provider definition files: read `*.toml` from `LINKD_PROVIDERS_DIR`, build and register the providers.

A file that does not validate becomes a `BrokenDefinition` stand-in: listed, always
disabled, carrying its problems, while every other provider keeps working.
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, cast

from linkd import Provider
from linkd.errors import PluginError
from linkd.provider import NAME_PATTERN, RESERVED_NAMES

from .provider import OAuth2Provider
from .schema import definition_problems

log = logging.getLogger("linkd.providers.oauth2")
MAX_FILE_BYTES = 64 * 1024


class BrokenDefinition(Provider):
    """Stands in for a definition file that did not validate: listed, always disabled, with its problems."""

    problems: ClassVar[tuple[str, ...]] = ()
    definition_file: ClassVar[str | None] = None

    @classmethod
    def setting_problems(cls, values: Mapping[str, str]) -> list[str]:
        return list(cls.problems)


def read_definition(path: Path) -> tuple[dict[str, Any], list[str]]:
    """(parsed file, problems), each problem prefixed with the file's path."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return {}, [f"{path}: the file is larger than {MAX_FILE_BYTES // 1024} KiB"]
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        return {}, [f"{path}: invalid TOML: {exc}"]
    except UnicodeDecodeError:
        return {}, [f"{path}: the file is not UTF-8 text"]
    except OSError as exc:
        return {}, [f"{path}: the file cannot be read ({exc.strerror})"]
    return data, [f"{path}: {problem}" for problem in definition_problems(data)]


def provider_from_file(path: Path, name: str) -> type[Provider]:
    """An `OAuth2Provider` subclass declared by the file, or a `BrokenDefinition` carrying its problems."""
    data, problems = read_definition(path)
    if problems:
        return broken_definition(name, path, problems)
    attrs: dict[str, Any] = {"name": name, "definition_file": str(path), "__module__": __name__}
    for key, value in data.items():
        attrs[key] = tuple(value) if isinstance(value, list) else value
    attrs.setdefault("title", name.replace("-", " ").replace("_", " ").title())
    attrs["__doc__"] = f"{attrs['title']}, declared in {path}."
    return cast(type[Provider], type(f"Declared_{name}", (OAuth2Provider,), attrs))


def broken_definition(name: str, path: Path, problems: list[str]) -> type[Provider]:
    attrs = {"name": name, "title": name, "problems": tuple(problems), "definition_file": str(path)}
    return cast(
        type[Provider], type(f"Broken_{name}", (BrokenDefinition,), {**attrs, "__module__": __name__})
    )


def _unique(base: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9_-]", "-", base.lower())
    base = (base if base[:1].isalpha() else "x" + base)[:27]
    candidate, n = f"{base}-toml", 2
    while candidate in taken or candidate in RESERVED_NAMES:
        candidate, n = f"{base}-toml{n}", n + 1
    return candidate


def load_definitions(directory: Path) -> list[type[Provider]]:
    """One provider class per `*.toml` file of `directory` (sorted by name); none if it does not exist."""
    if not directory.is_dir():
        return []
    classes: list[type[Provider]] = []
    taken: set[str] = set()
    for path in sorted(p for p in directory.glob("*.toml") if not p.name.startswith(".")):
        stem = path.stem
        if NAME_PATTERN.fullmatch(stem) and stem not in RESERVED_NAMES and stem not in taken:
            cls = provider_from_file(path, stem)
        else:
            rule = "lowercase letters, digits, '-' or '_', starting with a letter, at most 32, not reserved"
            cls = broken_definition(
                _unique(stem, taken), path, [f"{path}: the file name must be a provider name ({rule})"]
            )
        taken.add(cls.name)
        classes.append(cls)
    return classes


def register_all(register: Callable[[type[Provider]], None], classes: list[type[Provider]]) -> None:
    """Register each class; a name a code plugin registered first turns the file into a disabled stand-in.

    The Registry refuses a name twice with PluginError, before recording anything, so the
    refusal tells us a code plugin holds the name. Code wins; the file is reported, not fatal.
    """
    taken = {cls.name for cls in classes}
    for cls in classes:
        try:
            register(cls)
        except PluginError:
            path = Path(getattr(cls, "definition_file", None) or cls.name)
            problem = f"{path}: the name '{cls.name}' is taken by a code plugin; this file is ignored"
            stand_in = broken_definition(_unique(cls.name, taken), path, [problem])
            taken.add(stand_in.name)
            try:
                register(stand_in)
            except PluginError:  # pragma: no cover - _unique picks a free name
                log.warning("%s", problem)
