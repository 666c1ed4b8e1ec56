"""The console script's first code, before torch is imported.

Importing torch takes about a second. A Ctrl-C in that second must not
raise inside it: a KeyboardInterrupt in the middle of numpy's or torch's C
initialisation gave tracebacks ("cannot load module more than once") or was
swallowed, and the run went on. So the import runs with SIGINT only noted,
and a noted one ends charlm once the import is done.
"""

import signal
import sys

from charlm.errors import INTERRUPTED


def main() -> None:
    noted = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
    try:
        from charlm.cli import main as cli_main
    finally:
        signal.signal(signal.SIGINT, previous)
    if noted:
        sys.stderr.write(INTERRUPTED)
        sys.exit(130)
    cli_main()
