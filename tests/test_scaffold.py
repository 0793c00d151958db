"""`linkd new-provider NAME` (linkd/scaffold.py): a package that installs with pip and passes its own test."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from linkd import scaffold


def new_provider(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    scaffold.add_arguments(parser)
    return scaffold.run(parser.parse_args(list(argv)))


@pytest.mark.parametrize("name", ["", "1crm", "Acme", "a/b", "a.b", "api", "_sandbox", "x" * 33, "acme\n"])
def test_an_invalid_name_is_refused_and_nothing_is_written(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert new_provider(name, "--dir", str(tmp_path / "out")) == 2
    assert not (tmp_path / "out").exists()
    assert "not a provider name" in capsys.readouterr().err


def test_the_name_of_an_installed_plugin_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    installed = sorted(ep.name for ep in metadata.entry_points(group="linkd"))
    assert installed, "linkd's own providers are registered through the entry-point group"
    assert new_provider(installed[0], "--dir", str(tmp_path / "out")) == 2
    assert "already the name of an installed linkd plugin" in capsys.readouterr().err


def test_an_existing_package_is_never_overwritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert new_provider("acme-crm") == 0  # default directory: ./linkd-NAME
    module = tmp_path / "linkd-acme-crm" / "linkd_acme_crm.py"
    module.write_text("# my edits\n")
    assert new_provider("acme-crm") == 1
    assert module.read_text() == "# my edits\n"
    (tmp_path / "a-file").write_text("x")
    assert new_provider("acme-crm", "--dir", "a-file") == 1
    (tmp_path / "empty").mkdir()
    assert new_provider("acme-crm", "--dir", "empty") == 0


def test_the_written_package_installs_with_pip_and_its_own_test_passes(tmp_path: Path) -> None:
    package = tmp_path / "linkd-acme-crm"
    assert new_provider("acme-crm", "--dir", str(package)) == 0
    assert sorted(p.name for p in package.iterdir()) == [
        "README.md",
        "linkd_acme_crm.py",
        "setup.py",
        "test_linkd_acme_crm.py",
    ]
    setup = (package / "setup.py").read_text()
    assert '"linkd": ["acme-crm = linkd_acme_crm"]' in setup
    module = (package / "linkd_acme_crm.py").read_text()
    assert "class AcmeCrmProvider(OAuth2Provider):" in module and len(module.splitlines()) < 60

    site = tmp_path / "site"
    offline = importlib.util.find_spec("setuptools") and importlib.util.find_spec("wheel")
    pip = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--target",
        str(site),
        str(package),
    ]
    if offline:  # build with this environment's setuptools; otherwise pip fetches them for an isolated build
        pip.insert(4, "--no-build-isolation")
    installed = subprocess.run(pip, capture_output=True, text=True, timeout=300, check=False)
    assert installed.returncode == 0, installed.stderr
    assert (site / "linkd_acme_crm.py").is_file()
    assert any(p.name.startswith("linkd_acme_crm-0.1.0") for p in site.iterdir())

    # run the package's test from elsewhere, so it imports the installed module, not the source
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(package / "test_linkd_acme_crm.py", run_dir)
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_linkd_acme_crm.py"],
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
