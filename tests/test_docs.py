"""docs/ is the contract a clone carries: generated from the code, never stale, nothing pointing outside the repo."""

from cli.docs import DOCS, render


def test_the_committed_docs_are_what_the_code_renders():
    for name, text in render().items():
        committed = DOCS / name
        assert committed.exists() and committed.read_text(encoding="utf-8") == text, (
            f"docs/{name} is stale: run `make docs` and commit the result"
        )
