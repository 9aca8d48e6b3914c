"""Packaging: every package-data glob ships something, the licence file matches pyproject, and
no merge leftover is tracked."""

from __future__ import annotations

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


def test_no_merge_leftovers_are_tracked() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "*.orig", "*.rej"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked == []
    assert "*.orig" in (ROOT / ".gitignore").read_text().split()
