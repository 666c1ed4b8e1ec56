"""The console script's first code, before torch is imported.

Importing torch takes about a second; a Ctrl-C in that second would otherwise
end in a traceback instead of the quiet exit 130 the rest of charlm gives.
"""

import sys


def main() -> None:
    try:
        from charlm.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("\ncharlm: interrupted\n")
        sys.exit(130)
    cli_main()
