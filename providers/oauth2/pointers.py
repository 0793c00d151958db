"""JSON pointers (RFC 6901): where a platform's answer keeps the account id and name."""

from __future__ import annotations

import re
from typing import Any


def pointer_tokens(pointer: str) -> list[str] | None:
    """The reference tokens of a pointer, or None when it is not a valid RFC 6901 pointer."""
    if pointer == "":
        return []
    if not pointer.startswith("/") or re.search(r"~(?![01])", pointer):
        return None
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def resolve_pointer(document: Any, pointer: str) -> Any:
    """The value `pointer` designates in `document`; KeyError when there is none."""
    tokens = pointer_tokens(pointer)
    if tokens is None:
        raise KeyError(pointer)
    for token in tokens:
        if isinstance(document, dict) and token in document:
            document = document[token]
        elif (
            isinstance(document, list)
            and re.fullmatch(r"0|[1-9][0-9]*", token)
            and int(token) < len(document)
        ):
            document = document[int(token)]
        else:
            raise KeyError(pointer)
    return document
