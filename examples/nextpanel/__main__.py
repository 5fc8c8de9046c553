"""``python -m examples.nextpanel [--host H] [--port P]``: serve the backend with uvicorn."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from atomicplug.errors import AtomicplugError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.nextpanel", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--config", help="atomicplug.toml (default: $ATOMICPLUG_CONFIG, else ./atomicplug.toml)")
    parser.add_argument("--no-access-log", action="store_true", help="do not log each request (a reverse proxy's log has them)")
    args = parser.parse_args(argv)
    if args.config:
        # The addons read the config themselves (ATOMICPLUG_CONFIG, else ./atomicplug.toml): the one given here.
        os.environ["ATOMICPLUG_CONFIG"] = str(Path(args.config).resolve())
    import uvicorn

    from .app import create_app

    try:
        app = create_app(args.config)
    except AtomicplugError as exc:
        print(f"nextpanel: {exc}", file=sys.stderr)
        return exc.exit_code
    uvicorn.run(app, host=args.host, port=args.port, access_log=not args.no_access_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
