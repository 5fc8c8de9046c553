"""``python -m atomicplug`` and the ``atomicplug`` command.

A command goes to the resident server when one listens for this interpreter
(docs/design.md "The resident server"); otherwise, or for a command the server
does not run, it runs here. Checking costs a ``stat`` when no server was started.
A command run here whose transaction may import new backends starts the health
gate's interpreter first, so that its start-up overlaps the imports
(docs/design.md "Health gate").
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

__all__ = ["main"]


def main() -> NoReturn:
    try:
        from atomicplug.resident.client import forward, leaves_server, requested_command, start_in_background

        code = forward(sys.argv[1:])
        if code is None:
            from atomicplug.stages.gate_interpreter import start_early

            start_early(requested_command(sys.argv[1:]))  # its start-up overlaps the imports below
            start_server = leaves_server(sys.argv[1:])
            from atomicplug.cli import exit_process, main as run_command  # ~60 ms of imports: a Ctrl-C then is one line too

            code = run_command()
            if start_server:
                try:
                    sys.stdout.flush()  # the command's output first; a failing flush is exit_process's to report
                except OSError:
                    pass
                start_in_background()
            exit_process(code)
    except KeyboardInterrupt:
        from atomicplug.errors import report_interrupt

        code = report_interrupt()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # None: a descriptor that was closed when the process started
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
