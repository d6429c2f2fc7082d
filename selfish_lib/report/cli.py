"""The ``selfish`` command: reproduce the report, re-render it, train one run, list runs.

    selfish reproduce --profile smoke --only 01_hypothesis
    selfish report --profile smoke
    selfish train --profile smoke --setting single --layout 2 --seed 0
    selfish runs

A bad parameter prints one line to stderr and exits with status 2; a failing
notebook or a missing file prints what failed and exits with status 1. Any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_FAILURE, EXIT_USAGE = 1, 2


def _parameter(text: str) -> tuple[str, str, object]:
    """Parse ``NOTEBOOK:NAME=VALUE`` (VALUE a Python literal, else a string)."""
    try:
        where, value = text.split("=", 1)
        notebook, name = where.split(":", 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid --param {text!r}: expected NOTEBOOK:NAME=VALUE, e.g. 01_hypothesis:layout=1.0"
        ) from None
    # `inf` is no Python literal, but 1e999 is one that evaluates to it, also in a list.
    literal = re.sub(r"(?<![\w.])inf\b", "1e999", value.strip(), flags=re.IGNORECASE)
    try:
        parsed = ast.literal_eval(literal)
    except (ValueError, SyntaxError):
        parsed = value
    return notebook, name, parsed


def _layout(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid layout {text!r}: expected a number >= 0 or inf"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``selfish`` command."""
    from ..engine.profiles import PROFILE_NAMES, SETTINGS

    profiles = ", ".join(PROFILE_NAMES)
    parser = argparse.ArgumentParser(prog="selfish", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rep = sub.add_parser("reproduce", help="execute the notebooks into reports/<profile>/")
    rep.add_argument("--profile", default="paper", help=f"one of {profiles} (default paper)")
    rep.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    rep.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the profile's)")
    rep.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="e.g. 01_hypothesis or 01")
    rep.add_argument("--reports-dir", default="reports", type=Path)
    rep.add_argument("--results-dir", default="results", type=Path)
    rep.add_argument("--data-path", type=Path, help="the corpus (default $SELFISH_DATA/cache)")
    rep.add_argument(
        "--param",
        type=_parameter,
        action="append",
        default=[],
        metavar="NB:NAME=VALUE",
        help="override a notebook's own parameter, e.g. 01_hypothesis:layout=1.0",
    )

    report = sub.add_parser("report", help="re-render the HTML of reports/<profile>/")
    report.add_argument("--profile", default="paper", help=f"one of {profiles}")
    report.add_argument("--reports-dir", default="reports", type=Path)

    train = sub.add_parser("train", help="train (or load) one run and print its metrics")
    train.add_argument("--profile", default="smoke", help=f"one of {profiles} (default smoke)")
    train.add_argument("--setting", default="single", help=", ".join(SETTINGS))
    train.add_argument("--layout", type=_layout, default=float("inf"), help="FLOAT or inf")
    train.add_argument("--seed", type=int, default=None, help="default: the profile's first")
    train.add_argument("--device", default="auto")
    train.add_argument("--results-dir", default="results", type=Path)
    train.add_argument("--data-path", type=Path)

    runs = sub.add_parser("runs", help="list the completed runs")
    runs.add_argument("--results-dir", default="results", type=Path)
    return parser


def _reproduce(args: argparse.Namespace) -> int:
    from .pipeline import run_pipeline

    extra: dict[str, dict] = {}
    for notebook, name, value in args.param:
        extra.setdefault(notebook, {})[name] = value
    htmls = run_pipeline(
        profile=args.profile,
        device=args.device,
        seeds=args.seeds,
        only=args.only,
        reports_dir=args.reports_dir,
        results_dir=args.results_dir,
        data_path=args.data_path,
        extra_parameters=extra,
    )
    for html in htmls:
        print(html)
    return 0


def _report(args: argparse.Namespace) -> int:
    from .pipeline import render_reports

    for html in render_reports(args.profile, args.reports_dir):
        print(html)
    return 0


def _train(args: argparse.Namespace) -> int:
    from ..engine.corpus import load_corpus
    from ..engine.profiles import get_profile
    from ..engine.runs import get_or_train
    from .pipeline import check_device

    config = get_profile(args.profile).config(args.setting, layout=args.layout, seed=args.seed)
    check_device(args.device)
    corpus = load_corpus(args.data_path)
    run = get_or_train(config, corpus=corpus, results_dir=args.results_dir, device=args.device)
    print(f"run {run.id}  trained in {run.meta.get('train_seconds', float('nan')):.1f} s")
    metrics = run.metrics(corpus.token_info(bilingual=run.config.bilingual), by=["language"])
    print(metrics.to_string(index=False))
    return 0


def _runs(args: argparse.Namespace) -> int:
    from ..engine.runs import list_runs

    table = list_runs(args.results_dir)
    print(
        table.to_string(index=False) if len(table) else f"no completed runs in {args.results_dir}"
    )
    return 0


COMMANDS = {"reproduce": _reproduce, "report": _report, "train": _train, "runs": _runs}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return int(exc.code or 0)
    from .pipeline import NotebookError

    try:
        return COMMANDS[args.command](args)
    except ValueError as exc:
        # ParameterError and the library's other "invalid x=..." errors (e.g. a device
        # this machine lacks, a corpus file with the wrong checksum).
        print(f"selfish {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (NotebookError, FileNotFoundError) as exc:
        print(f"selfish {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
