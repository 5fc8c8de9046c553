"""``atomicplug doctor``: check the installation (exit 1 when something would stop a transaction)."""

from __future__ import annotations

import argparse
import json

from atomicplug.cli import load_config

__all__ = ["register"]


def cmd_doctor(args: argparse.Namespace) -> int:
    import attrs

    from atomicplug.doctor import examine

    findings = examine(load_config(args))
    if args.json:
        print(json.dumps([attrs.asdict(f) for f in findings], indent=2))
    else:
        width = max(len(f.check) for f in findings)
        for finding in findings:
            print(f"{'ok ' if finding.ok else 'BAD'}  {finding.check:{width}} {finding.detail}")
    return 0 if all(f.ok for f in findings) else 1


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("doctor", help="check the installation", description="Check the installation; exit 1 on a problem.")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_doctor)
