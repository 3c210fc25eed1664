"""The `batch-export` command: operator commands and the terminal client for people."""

from cli.main import main

__all__ = ["main"]
