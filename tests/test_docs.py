"""docs/ is the contract a clone carries: generated from the code, never stale, nothing pointing outside the repo."""

import os
from pathlib import Path

from cli.docs import DOCS, render

REPO = Path(__file__).resolve().parents[1]
SKIPPED = {".git", ".venv", "node_modules", ".data", ".pytest_cache", ".mypy_cache", ".ruff_cache", "__pycache__"}


def test_the_committed_docs_are_what_the_code_renders():
    for name, text in render().items():
        committed = DOCS / name
        assert committed.exists() and committed.read_text(encoding="utf-8") == text, (
            f"docs/{name} is stale: run `make docs` and commit the result"
        )


def test_no_file_points_outside_the_repository_at_shared_documents():
    outside = "../" + "shared"  # spelled in two pieces so this file does not match itself
    offenders = []
    for folder, subfolders, files in os.walk(REPO):
        subfolders[:] = [d for d in subfolders if d not in SKIPPED and not d.endswith(".egg-info")]
        for name in files:
            path = Path(folder, name)
            try:
                if outside in path.read_text(encoding="utf-8"):
                    offenders.append(str(path.relative_to(REPO)))
            except (UnicodeDecodeError, OSError):
                continue  # binary files (the screenshot) cannot hold a link
    assert offenders == [], f"these files refer to {outside}/, which a clone does not have: {offenders}"
