"""``python -m planner``: one subcommand per module in :mod:`planner.commands`.

Each module there defines ``register(subparsers)``, which adds its parser and sets ``func``.
Discovery keeps this file free of per-command edits.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from planner import commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="planner", description="Deadline-aware inference configuration planner: data, train, profile, evaluate, report.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{commands.__name__}.{info.name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        # Known user-facing failures (bad config, missing file, malformed profile): one clear line.
        print(f"error: {exc}", file=sys.stderr)
        return 2
