"""The TypeScript client package on disk, and running its tools: npm, tsc and node."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

CLIENT_DIR = Path(__file__).resolve().parents[2] / "clients" / "ts"
TSC = CLIENT_DIR / "node_modules" / ".bin" / "tsc"
_DIAGNOSTIC = re.compile(r"^(?P<file>.+?)\((?P<line>\d+),(?P<column>\d+)\): error (?P<code>TS\d+): (?P<message>.*)$")


def run(
    command: list[str | Path], cwd: Path = CLIENT_DIR, timeout: float = 300, **kwargs
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=timeout, **kwargs
    )


def lock_digest() -> str:
    """What an install from the lock file depends on: package.json and package-lock.json."""
    return hashlib.sha256(
        (CLIENT_DIR / "package.json").read_bytes() + (CLIENT_DIR / "package-lock.json").read_bytes()
    ).hexdigest()


def compile_alone(files: list[Path], work_dir: Path) -> subprocess.CompletedProcess:
    """tsc --noEmit on just `files`, with the package's compiler options and its installed types."""
    config = {
        "extends": str(CLIENT_DIR / "tsconfig.json"),
        "compilerOptions": {
            "noEmit": True,
            "strict": True,
            "rootDir": "/",
            "typeRoots": [str(CLIENT_DIR / "node_modules" / "@types")],
        },
        "files": [str(path) for path in files],
        "include": [],
    }
    config_path = work_dir / "tsconfig.json"
    # Files copied into work_dir are ES modules, like the package's own.
    (work_dir / "package.json").write_text(json.dumps({"type": "module"}))
    config_path.write_text(json.dumps(config))
    return run([TSC, "-p", config_path, "--pretty", "false"], cwd=work_dir)


def diagnostics(output: str) -> Iterator[tuple[str, int, str]]:
    """(file, line, message with its continuation lines) for each error tsc printed."""
    current: list | None = None
    for text in output.splitlines():
        match = _DIAGNOSTIC.match(text)
        if match:
            if current:
                yield tuple(current)
            current = [match["file"], int(match["line"]), f"{match['code']}: {match['message']}"]
        elif current and text.startswith(" "):
            current[2] += "\n" + text.strip()
    if current:
        yield tuple(current)
