"""The README is true: its quick start needs nothing outside a fresh clone, and CI runs the slow tests too."""

import re
import shlex
from pathlib import Path

import typer

from charlm.cli import app
from charlm.text.named import REGISTRY
from conftest import REPO


def _quick_start() -> list[list[str]]:
    section = (REPO / "README.md").read_text(encoding="utf-8").split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line.split("  #")[0]) for line in block.splitlines() if line.startswith("charlm ")]


def test_the_quick_start_needs_nothing_outside_the_repository():
    commands = typer.main.get_command(app).commands
    runs = set()  # run directories made by the lines above
    for argv in _quick_start():
        name, args = argv[1], argv[2:]
        params = commands[name].make_context(name, list(args), resilient_parsing=True).params
        if params.get("config"):
            assert (REPO / params["config"]).is_file(), params["config"]
        if name == "train":
            corpus = params["corpus"] or ["python"]
            assert all(c in REGISTRY or (REPO / c).exists() for c in corpus), f"{argv}: not in a fresh clone"
            stem = Path(REGISTRY[corpus[0]].filename if corpus[0] in REGISTRY else corpus[0]).stem
            runs.add(str(params["out"] or Path("checkpoints") / stem))
        else:
            assert runs, f"{argv} comes before any run is trained"
            if params.get("checkpoint"):
                assert str(params["checkpoint"]) in runs, f"{argv}: no line above trains {params['checkpoint']}"
            if params.get("text"):
                assert (REPO / params["text"]).is_file(), params["text"]


def test_ci_runs_the_default_suite_and_the_slow_tests():
    steps = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "\npython -m pytest -q\n" in steps and "\npython -m pytest -q -m slow\n" in steps
