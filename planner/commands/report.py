"""``planner report``: execute the notebooks with papermill, then build the Jupyter Book."""

from __future__ import annotations

import argparse

from planner.report import book as report


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="execute the notebooks (papermill) and build the book into _build/html",
        description="Execute notebooks/*.md for a preset into results/<preset>/notebooks/ (skipping "
                    "up-to-date ones), then build the Jupyter Book with warnings as errors.")
    parser.add_argument("--preset", default="quick", help="quick (smoke run, labelled as such) or full (the study)")
    parser.add_argument("--task", default="all", help="task passed to every notebook (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="override the preset's evaluation seeds inside the notebooks")
    parser.add_argument("--only", nargs="+", default=None, metavar="NOTEBOOK",
                        help="execute only these notebooks (stems, e.g. 03_evaluate)")
    parser.add_argument("--force", action="store_true", help="re-execute notebooks even when up to date")
    parser.add_argument("--kernel", default=report.KERNEL_NAME, help="Jupyter kernel name (default: python3)")
    step = parser.add_mutually_exclusive_group()
    step.add_argument("--notebooks-only", action="store_true", help="execute the notebooks, do not build the book")
    step.add_argument("--book-only", action="store_true", help="build the book from already executed notebooks")
    parser.add_argument("--no-warnings-as-errors", action="store_true", help="build without -W (debugging only)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.book_only:
        runs = report.execute_all(args.preset, force=args.force, only=args.only, task=args.task,
                                  seeds=args.seeds, kernel_name=args.kernel)
        for r in runs:
            detail = f"{r.seconds:6.1f} s" if r.status == "executed" else "up to date"
            print(f"{r.name:28s} {r.status:9s} {detail}  -> {r.output}")
            for line in report.stderr_lines(r.output)[:5] if r.status == "executed" else []:
                print(f"    stderr: {line}")
    if not args.notebooks_only:
        index = report.build_book(args.preset, warnings_as_errors=not args.no_warnings_as_errors)
        print(f"book ({args.preset}): {index}")
    return 0
