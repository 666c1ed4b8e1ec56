"""Make the README's pictures with charlm itself: a report and a terminal view, rendered by headless Chromium.

    python docs/screenshots.py checkpoints/tinyshakespeare [more runs...]

Writes docs/report.png (the top of `charlm report`), docs/report-surprisal.png
(its surprisal view, the first character of 5 to 6 bits hovered), docs/inspect.png (`charlm
inspect` in a 100-column true-colour terminal: its ANSI output turned into
HTML by rich and rendered) and docs/inspect-neurons.png (`charlm inspect
--find-neurons` with --pattern, by default Tiny Shakespeare's speaker lines).
Needs matplotlib and Chromium.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from io import StringIO
from pathlib import Path

from rich.console import Console
from rich.text import Text

from charlm.report.browser import render_page

DOCS = Path(__file__).resolve().parent
TERMINAL_HTML = """<!DOCTYPE html><html><head><meta charset="utf-8"><style>
body {{ margin: 0; background: #1e1e1e; }}
pre {{ margin: 0; padding: 14px 18px; color: #d4d4d4; background: #1e1e1e;
       font: 13px/1.35 "DejaVu Sans Mono", ui-monospace, monospace; }}
</style></head><body><pre>{code}</pre></body></html>"""


def charlm(*args: str, env: dict | None = None) -> str:
    command = [sys.executable, "-m", "charlm", *args]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode:
        sys.exit(f"{shlex.join(command)} failed:\n{done.stderr}")
    return done.stdout


def terminal_png(args: list[str], out: Path, columns: int = 100) -> None:
    """Run `charlm ARGS` as in a true-colour terminal and picture its output, prompt line included."""
    ansi = charlm(*args, env={"FORCE_COLOR": "1", "COLORTERM": "truecolor", "COLUMNS": str(columns), "NO_COLOR": ""})
    console = Console(record=True, width=columns, file=StringIO(), color_system="truecolor")
    console.print(Text("$ charlm " + shlex.join(args), style="bold #9cdcfe"))
    console.print(Text.from_ansi(ansi))  # wrapped at the terminal's width, as a terminal would
    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder) / "terminal.html"
        page.write_text(console.export_html(inline_styles=True, code_format=TERMINAL_HTML), encoding="utf-8")
        result = render_page(page, width=columns * 8 + 40)
        out.write_bytes(result.png)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories for the report; the first one is inspected")
    parser.add_argument("--inspect-length", type=int, default=700, help="characters in the terminal view")
    parser.add_argument("--pattern", default=r"(?m)^[A-Z][A-Z ]*:$", help="for --find-neurons")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.html"
        print(charlm("report", *options.runs, "-o", str(report)).strip())
        for name, height, hover in (("report.png", 1500, None), ("report-surprisal.png", 900, ".sv span[data-bits^='5.']")):
            result = render_page(report, width=1200, height=height, hover=hover)
            if result.errors:
                sys.exit(f"the report shows errors in Chromium: {result.errors}")
            (DOCS / name).write_bytes(result.png)
            print(f"wrote {DOCS / name} ({(DOCS / name).stat().st_size // 1024} KB)")
    terminal_png(["inspect", "--checkpoint", options.runs[0], "--length", str(options.inspect_length)],
                 DOCS / "inspect.png")
    terminal_png(["inspect", "--checkpoint", options.runs[0], "--find-neurons", options.pattern, "--top", "1",
                  "--length", "420"], DOCS / "inspect-neurons.png")


if __name__ == "__main__":
    main()
