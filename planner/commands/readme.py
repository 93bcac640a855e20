"""``planner readme``: regenerate the README's generated blocks (key results, trained weights) from results.

Nothing in those blocks is typed by hand: the key-results tables come from ``results/<preset>/eval/``
and the trained-weights table from the published weights' manifest (``results/<preset>/models/weights/``).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

from planner.analysis import bounds, results
from planner.paths import REPO_ROOT

BLOCKS = ("key-results", "training")
README = REPO_ROOT / "README.md"


def markers(name: str = "key-results") -> tuple[str, str]:
    """The comment lines that enclose the generated block ``name``."""
    if name not in BLOCKS:
        raise ValueError(f"unknown README block {name!r}; known: {list(BLOCKS)}")
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


START, END = markers("key-results")


def render(preset: str, name: str = "key-results") -> str:
    """The block ``name`` as computed from the preset's results: the steady key results and the scorecard
    over every workload of the grid (``key-results``), or the published models' training (``training``)."""
    if name == "training":
        return training_markdown(results.training_record(preset)[0], preset)
    markers(name)
    runs = results.load_runs(preset)
    card = results.scorecard(results.grid_cells(runs), bounds.scorecard_ceilings(preset, runs))
    return "\n\n".join([results.key_results_markdown(results.key_results(preset), preset),
                        results.grid_scorecard_markdown(card, preset)])


def training_markdown(trained: pd.DataFrame, preset: str) -> str:
    """One row per published model: schedule, teacher, measured training time and accuracy, file size."""
    if trained.empty:
        return f"No weights are published for the `{preset}` preset yet (`results/{preset}/models/weights/`)."
    lines = ["| model | task | epochs (learning-rate cycles: epochs@scale) | cycle ends averaged | distilled from "
             "| training steps (min) | accuracy (split, fp32) | published MB |", "|---|---|---|---|---|---|---|---|"]
    order = trained.sort_values(["task", "megabytes"], kind="stable")
    for row in order.itertuples(index=False):
        schedule = "one cycle" if row.lr_cycles == "1" else row.lr_cycles
        lines.append(f"| {row.model} | {row.task} | {row.epochs:g} ({schedule}) | {row.averaged_cycle_ends} "
                     f"| {row.distilled_from} | {row.train_minutes:.0f} | {100 * row.eval_accuracy:.2f} % "
                     f"({row.eval_split}) | {row.megabytes:.1f} |")
    lines.append(f"\nPreset `{preset}`, generated from `results/{preset}/models/weights/MANIFEST.json` by "
                 f"`python -m planner readme --preset {preset}`; training time is the sum of the timed steps "
                 "over resumed runs on this 2-core machine (shared with other work), fp16 files.")
    return "\n".join(lines)


def _block_pattern(text: str, path: Path, name: str) -> tuple[re.Pattern, str, str, str]:
    """The regex of block ``name``'s markers, the markers, and what lies between them now (a ValueError
    unless ``text`` holds exactly one such block)."""
    start, end = markers(name)
    pattern = re.compile(re.escape(start) + r"(.*?)" + re.escape(end), re.S)
    matches = pattern.findall(text)
    if len(matches) != 1:
        raise ValueError(f"{path}: expected exactly one {start} ... {end} block, found {len(matches)}")
    return pattern, start, end, matches[0]


def replace_block(text: str, block: str, path: Path = README, name: str = "key-results") -> str:
    """``text`` with the content between the markers of block ``name`` replaced by ``block``."""
    pattern, start, end, _ = _block_pattern(text, path, name)
    return pattern.sub(lambda _: f"{start}\n{block}\n{end}", text)


def current_block(text: str, path: Path = README, name: str = "key-results") -> str:
    """What the README holds between the markers of block ``name`` now (stripped)."""
    return _block_pattern(text, path, name)[3].strip()


def register(subparsers) -> None:
    parser = subparsers.add_parser("readme", help="regenerate the README's key-results and trained-weights tables "
                                                  "from the results")
    parser.add_argument("--preset", default="full", help="whose results to tabulate (default: full, the committed study)")
    parser.add_argument("--check", action="store_true", help="only check that the README is up to date (exit 1 if not)")
    parser.add_argument("--readme", type=Path, default=README, help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    text = args.readme.read_text()
    blocks = {name: render(args.preset, name) for name in BLOCKS}
    if args.check:
        stale = [name for name, block in blocks.items() if current_block(text, args.readme, name) != block.strip()]
        if stale:
            print(f"{args.readme}: {', '.join(stale)} out of date; run `python -m planner readme --preset {args.preset}`")
            return 1
        print(f"{args.readme}: key results and trained weights match results/{args.preset}/")
        return 0
    for name, block in blocks.items():
        text = replace_block(text, block, args.readme, name)
    args.readme.write_text(text)
    print(f"{args.readme}: key-results and trained-weights tables regenerated from results/{args.preset}/")
    return 0
