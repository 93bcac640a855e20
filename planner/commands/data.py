"""``planner data``: fill ``data/`` from a local mirror, or download with ``--download``."""

from __future__ import annotations

import argparse
from pathlib import Path

from planner import data
from planner.paths import REPO_ROOT, data_dir


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="fill data/ from a local mirror or download it")
    parser.add_argument("--mirror", type=Path, default=REPO_ROOT.parent / "shared" / "data",
                        help="local mirror folder (default: ../shared/data)")
    parser.add_argument("--download", action="store_true",
                        help="use the online loaders (datasets, torchvision) instead of a mirror")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root = data_dir()
    if args.download or not args.mirror.exists():
        print(f"no mirror at {args.mirror}; downloading" if not args.download else "downloading")
        data.load_sst2("train", download=True)
        data.load_cifar10("train", download=True)
    else:
        copied = data.fill_from_mirror(args.mirror, root)
        print(f"{len(copied)} file(s) copied from {args.mirror} into {root}")
    for split in ("train", "validation"):
        print(f"sst2/{split}: {len(data.load_sst2(split))} rows verified")
    for split in ("train", "test"):
        print(f"cifar10/{split}: {len(data.load_cifar10(split)[1])} images verified")
    return 0
