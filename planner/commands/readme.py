"""``planner readme``: regenerate the README's key-results table from the results CSVs."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from planner.analysis import results
from planner.paths import REPO_ROOT

START, END = "<!-- key-results:start -->", "<!-- key-results:end -->"
README = REPO_ROOT / "README.md"


def render(preset: str) -> str:
    """The block that belongs between the markers, computed from ``results/<preset>/eval/``: the steady
    key results, then the scorecard over every workload of the grid."""
    return "\n\n".join([results.key_results_markdown(results.key_results(preset), preset),
                         results.grid_scorecard_markdown(results.grid_scorecard(preset), preset)])


def replace_block(text: str, block: str, path: Path = README) -> str:
    """``text`` with the content between the key-results markers replaced by ``block``."""
    pattern = re.compile(re.escape(START) + r"(.*?)" + re.escape(END), re.S)
    matches = pattern.findall(text)
    if len(matches) != 1:
        raise ValueError(f"{path}: expected exactly one {START} ... {END} block, found {len(matches)}")
    return pattern.sub(lambda _: f"{START}\n{block}\n{END}", text)


def current_block(text: str, path: Path = README) -> str:
    """What the README holds between the markers now (stripped)."""
    pattern = re.compile(re.escape(START) + r"(.*?)" + re.escape(END), re.S)
    matches = pattern.findall(text)
    if len(matches) != 1:
        raise ValueError(f"{path}: expected exactly one {START} ... {END} block, found {len(matches)}")
    return matches[0].strip()


def register(subparsers) -> None:
    parser = subparsers.add_parser("readme", help="regenerate the README's key-results table from results CSVs")
    parser.add_argument("--preset", default="full", help="whose results to tabulate (default: full, the committed study)")
    parser.add_argument("--check", action="store_true", help="only check that the README is up to date (exit 1 if not)")
    parser.add_argument("--readme", type=Path, default=README, help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    text = args.readme.read_text()
    block = render(args.preset)
    if args.check:
        if current_block(text, args.readme) != block.strip():
            print(f"{args.readme}: key-results table is out of date; run `python -m planner readme --preset {args.preset}`")
            return 1
        print(f"{args.readme}: key-results table matches results/{args.preset}/eval/")
        return 0
    args.readme.write_text(replace_block(text, block, args.readme))
    print(f"{args.readme}: key-results table regenerated from results/{args.preset}/eval/")
    return 0
