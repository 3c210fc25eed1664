"""`python -m cli`: the same as the `batch-export` command."""

from cli.main import main

main()
