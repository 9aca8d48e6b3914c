"""Is requirements/*.lock still the resolution of pyproject.toml's dependencies?

Each lock file starts with ``# pyproject-digest: <sha256>``, a digest of what pyproject.toml
asks for (requires-python, the dependencies and the extras that lock covers). ``scripts/lock.sh``
writes it; ``scripts/test.sh`` and ``tests/unit/test_lock.py`` compare it, so a dependency added
to pyproject without re-locking fails in one line instead of installing an unpinned set.

    python3 scripts/lockcheck.py            # exit 1 and one line per stale lock
    python3 scripts/lockcheck.py --digest runtime   # print the digest lock.sh writes
"""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: lock name -> the extras it installs on top of the runtime dependencies.
LOCKS: dict[str, tuple[str, ...]] = {"runtime": (), "test": ("test",), "dev": ("dev",)}
HEADER = "# pyproject-digest: "


def digest(name: str, pyproject: Path = ROOT / "pyproject.toml") -> str:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    wanted = {
        "requires-python": project.get("requires-python"),
        "dependencies": sorted(project.get("dependencies", [])),
        "extras": {
            extra: sorted(project.get("optional-dependencies", {}).get(extra, []))
            for extra in LOCKS[name]
        },
    }
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()


def lock_path(name: str, root: Path = ROOT) -> Path:
    return root / "requirements" / f"{name}.lock"


def stale(root: Path = ROOT) -> list[str]:
    """One line per lock that is missing or does not match pyproject.toml."""
    problems = []
    for name in LOCKS:
        path = lock_path(name, root)
        first = path.read_text(encoding="utf-8").splitlines()[:1] if path.exists() else []
        if first != [HEADER + digest(name, root / "pyproject.toml")]:
            rel = path.relative_to(root)
            problems.append(f"{rel} is stale or missing vs pyproject.toml: run scripts/lock.sh")
    return problems


def main(argv: list[str]) -> int:
    if argv[:1] == ["--digest"] and len(argv) == 2:
        print(digest(argv[1]))
        return 0
    problems = stale()
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
