"""The `charlm` command line: Typer commands over the library (see app.py)."""

from charlm.cli.app import app, main

__all__ = ["app", "main"]
