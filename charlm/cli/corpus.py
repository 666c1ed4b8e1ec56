"""`charlm corpus list|get`: the named corpora."""

from __future__ import annotations

import typer

from charlm.cli.common import Command, Group, user_errors
from charlm.cli.inputs import fetch_with_progress
from charlm.text.named import REGISTRY, is_present, local_path

corpus_app = typer.Typer(cls=Group, no_args_is_help=True, help="Named corpora: list them, fetch one.")


@corpus_app.command("list", cls=Command)
def corpus_list() -> None:
    """The named corpora, whether each is here yet, and what it is."""
    with user_errors():
        for corpus in REGISTRY.values():
            status = f"ready ({local_path(corpus)})" if is_present(corpus) else (
                "built on first use" if corpus.url is None else "fetched on first use")
            typer.echo(f"{corpus.name:16} {status}\n{'':16} {corpus.description}")


@corpus_app.command("get", cls=Command)
def corpus_get(name: str = typer.Argument(..., help="a name from `charlm corpus list`")) -> None:
    """Fetch (or build) a named corpus into corpora/ and verify it; print where it is."""
    with user_errors():
        path = fetch_with_progress(name)
        corpus = REGISTRY[name]
        splits = (f"; standard splits {corpus.standard_splits[0]:,} / "
                  f"{corpus.standard_splits[1] - corpus.standard_splits[0]:,} / rest, in {corpus.unit}s"
                  if corpus.standard_splits else "")
        typer.echo(f"{name}: {path} ({path.stat().st_size:,} bytes{splits})")
