"""The ``selfish`` command: reproduce the report, re-render it, train one run, list and
verify the runs of the store.

    selfish reproduce --profile smoke --only 01_hypothesis
    selfish reproduce --profile paper --executor ray --address auto
    selfish report --profile smoke
    selfish train --profile smoke --setting single --layout 2 --seed 0
    selfish runs
    selfish verify
    selfish claims --profile smoke

A bad parameter, or a path that cannot be used (a file where a folder should be, a
read-only folder, a full disk), prints one line to stderr naming it and exits with
status 2; a failing notebook, a missing file or a corrupt run found by ``verify``
exits with status 1; Ctrl-C exits with status 130 after saying what was kept. Add
``--debug`` to see the traceback of any of these.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..engine.corpus import load_corpus, subword_size
from ..engine.distributed import RayRunError
from ..engine.executors import EXECUTORS, default_jobs
from ..engine.objectives import objective_for_layout
from ..engine.profiles import PROFILE_NAMES, SETTINGS, get_profile
from ..engine.runs import get_or_train, list_runs, verify_store
from ..engine.training import TrainingInterrupted, describe_device, resolve_device
from ..engine.validation import ParameterError, check_seed
from ..engine.validation import shown as short
from ..study.claims import family_table, load_claims, readable_claims
from .parameters import check_device
from .pipeline import (
    JOBS_PER_CPU,
    NotebookError,
    max_jobs,
    prepare,
    render_reports,
    run_pipeline,
    select_notebooks,
)
from .plan import PENDING_STATUS, calibrate, format_duration, plan_table

EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def _parameter(text: str, value: str | None = None) -> tuple[str | None, str, object]:
    """Parse ``[NOTEBOOK:]NAME=VALUE``, or ``[NOTEBOOK:]NAME`` with ``value`` given apart
    (``-p NAME VALUE``, as papermill takes it). VALUE is a Python literal, else a string;
    NOTEBOOK (a name such as 03_hns_training, or its number 03) is None when not given."""
    shown = text if value is None else f"{text} {value}"
    if value is None:
        where, equals, value = text.partition("=")
    else:
        where, equals = text, "="
    notebook, colon, name = where.rpartition(":")
    if not equals or not name.isidentifier() or (colon and not notebook):
        raise argparse.ArgumentTypeError(
            f"invalid --param {short(shown)}: expected [NOTEBOOK:]NAME=VALUE or [NOTEBOOK:]NAME"
            " VALUE, e.g. layout=1.0 with one notebook selected, 01_hypothesis:layout=1.0 with"
            " several"
        )
    # `inf` is no Python literal, but 1e999 is one that evaluates to it, also in a list.
    literal = re.sub(r"(?<![\w.])inf\b", "1e999", value.strip(), flags=re.IGNORECASE)
    try:
        parsed = ast.literal_eval(literal)
    except (ValueError, SyntaxError):  # not a literal (or an int of over 4300 digits)
        parsed = value
    except (RecursionError, MemoryError):  # "-" * 3000 + "1": nested past what Python reads
        raise argparse.ArgumentTypeError(
            f"invalid --param {name}={short(value)}: a value nested too deeply to read;"
            " expected a number, a string or a short list such as [1.0, inf]"
        ) from None
    return notebook or None, name, parsed


class _ParameterAction(argparse.Action):
    """``-p NAME=VALUE`` or ``-p NAME VALUE`` (NAME optionally ``NOTEBOOK:NAME``), each
    appended as the ``(notebook, name, value)`` of ``_parameter``."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) > 2:
            raise argparse.ArgumentError(
                self, f"expected NAME=VALUE or NAME VALUE, got {' '.join(values)!r}"
            )
        try:
            parsed = _parameter(*values)
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentError(self, str(exc)) from None
        # (a repeated parameter is refused by _extra_parameters, once every notebook
        # prefix is resolved: -p layout=1 and -p 03:layout=2 set the same one)
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), parsed])


def _extra_parameters(params: Sequence[tuple], only: Sequence[str] | None) -> dict[str, dict]:
    """The per-notebook overrides of ``--param`` for the notebooks ``only`` selects.

    A parameter without a notebook goes to the one notebook selected; with several
    selected it is an error naming them. A notebook given by its number (03) is named
    in full; one not selected is left for the pipeline to refuse. A parameter given
    twice for one notebook (however its notebook is written) is an error naming it.
    """
    chosen = [path.stem for path in select_notebooks(only)]
    every = [path.stem for path in select_notebooks(None)]
    extra: dict[str, dict] = {}
    for notebook, name, value in params:
        if notebook is None:
            if len(chosen) != 1:
                raise ParameterError(
                    "--param", name,
                    f"NOTEBOOK:{name}=VALUE while several notebooks run, NOTEBOOK one of "
                    + ", ".join(chosen) + " (or select one with --only)",
                )  # fmt: skip
            notebook = chosen[0]
        else:
            named = [stem for stem in every if notebook in (stem, stem[:2])]
            notebook = named[0] if len(named) == 1 else notebook
        values = extra.setdefault(notebook, {})
        if name in values:  # the last would silently win: say so instead
            raise ParameterError(
                "--param", f"{notebook}:{name}",
                f"each parameter once; {name} was given {short(values[name])} and then "
                f"{short(value)}",
            )  # fmt: skip
        values[name] = value
    return extra


def _layout(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid layout {text!r}: expected a number >= 0 or inf"
        ) from None


def _jobs(text: str) -> str | int:
    """auto, or an integer from 1 to ``max_jobs()`` (``JOBS_PER_CPU`` per CPU core here)."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= max_jobs():
        raise argparse.ArgumentTypeError(
            f"invalid --jobs {short(text)}: expected auto or an integer from 1 to {max_jobs()}"
            f" ({JOBS_PER_CPU} per CPU core: {os.cpu_count() or 1} here; more workers only wait"
            " their turn)"
        )
    return value


def _positive(option: str):
    """An argparse type: an integer >= 1, or a usage error naming ``option``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"invalid {option} {text!r}: expected an integer >= 1")
        return value

    return parse


def _add_selection(command: argparse.ArgumentParser, profiles: str) -> None:
    """The options that choose a reproduction: profile, device, seeds, notebooks, store,
    corpus and notebook parameters (shared by ``reproduce`` and ``plan``)."""
    command.add_argument("--profile", default="paper", help=f"one of {profiles} (default paper)")
    command.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    command.add_argument(
        "--seeds", type=int, nargs="+", help="seeds, each >= 0 and < 2**63 (default: the profile's)"
    )  # checked with check_seeds by the pipeline, before any work
    command.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="e.g. 01_hypothesis or 01")
    command.add_argument("--results-dir", default="results")
    command.add_argument("--data-path", help="the corpus (default $SELFISH_DATA/cache)")
    command.add_argument(
        "-p",
        "--param",
        action=_ParameterAction,
        nargs="+",
        default=[],
        metavar=("[NB:]NAME[=VALUE]", "VALUE"),
        help="override a notebook's own parameter: -p layout=1.0 or -p layout 1.0 with one "
        "notebook selected (--only 01), 01_hypothesis:layout=1.0 or 01:layout=1.0 with several",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``selfish`` command."""
    profiles = ", ".join(PROFILE_NAMES)
    parser = argparse.ArgumentParser(prog="selfish", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rep = sub.add_parser("reproduce", help="execute the notebooks into reports/<profile>/")
    _add_selection(rep, profiles)
    rep.add_argument("--reports-dir", default="reports")
    rep.add_argument(
        "--jobs",
        type=_jobs,
        default="auto",
        help="runs trained at once: worker processes with --executor local; with --executor "
        "ray and no --address, the CPUs of the local Ray cluster started for the command "
        "(default auto: one per CPU core, or one per GPU; not with --address)",
    )
    rep.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="where the runs are trained: local (this machine; default) or ray (every run a "
        "Ray task with 1 CPU, and 1 GPU on CUDA; needs pip install -e '.[ray]', and a "
        "results dir and corpus that every node sees at the same path)",
    )
    rep.add_argument(
        "--address",
        metavar="ADDR",
        help="the Ray cluster, with --executor ray only: auto (the cluster this node is part "
        "of, or $RAY_ADDRESS) or HOST:PORT of its head (default: a local cluster)",
    )
    rep.add_argument(
        "--ensemble",
        type=_positive("--ensemble"),
        default=1,
        metavar="N",
        help="train runs of one shape (the seeds and objectives of a setting) in groups of up "
        "to N as one batched model; numbers match the solo runs' within a tested tolerance, "
        "not bit for bit (default 1: every run alone; worth it on a GPU, not on a CPU)",
    )
    rep.set_defaults(check=lambda args: _check_reproduce(rep, args))

    plan = sub.add_parser("plan", help="list every run the notebooks need, with status and time")
    _add_selection(plan, profiles)
    plan.add_argument("--no-estimate", action="store_true", help="skip the timing calibration")

    report = sub.add_parser("report", help="re-render the HTML of reports/<profile>/")
    report.add_argument("--profile", default="paper", help=f"one of {profiles}")
    report.add_argument("--reports-dir", default="reports")

    train = sub.add_parser("train", help="train (or load) one run and print its metrics")
    train.add_argument("--profile", default="smoke", help=f"one of {profiles} (default smoke)")
    train.add_argument("--setting", default="single", help=", ".join(SETTINGS))
    train.add_argument("--layout", type=_layout, default=float("inf"), help="FLOAT or inf")
    train.add_argument(
        "--seed", type=int, default=None,
        help="an integer >= 0 and < 2**63 (default: the profile's first)",
    )  # fmt: skip
    train.add_argument(
        "--tokenizer", default="char",
        help="char (default) or bpe-V: V BPE subwords, the run notebook 08 reads at that V",
    )  # fmt: skip
    train.add_argument("--device", default="auto")
    train.add_argument("--results-dir", default="results")
    train.add_argument("--data-path")

    family = sub.add_parser(
        "claims", help="the primary family of claims of reports/<profile>/, after Holm"
    )
    family.add_argument("--profile", default="paper", help=f"one of {profiles}")
    family.add_argument("--reports-dir", default="reports")
    family.add_argument(
        "--all", action="store_true", help="every row of claims.json, exploratory ones too"
    )

    runs = sub.add_parser("runs", help="list the completed runs")
    runs.add_argument("--results-dir", default="results")

    verify = sub.add_parser("verify", help="check every run of the store against its manifest")
    verify.add_argument("--results-dir", default="results")
    for command in (rep, plan, report, train, runs, verify):
        command.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return parser


def _check_reproduce(command: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Options that only go together: --address with --executor ray, and not with --jobs
    (a cluster's own resources decide); a usage error (status 2) otherwise."""
    if args.address is not None and args.executor != "ray":
        command.error("--address ADDR is for --executor ray only (add --executor ray)")
    if args.address is not None and args.jobs != "auto":
        command.error(
            "--jobs sizes the local Ray cluster only: with --address the cluster's own "
            "CPUs and GPUs decide how many runs train at once"
        )


def _reproduce(args: argparse.Namespace) -> int:
    extra = _extra_parameters(args.param, args.only)
    print(describe_device(args.device), flush=True)
    htmls = run_pipeline(
        profile=args.profile,
        device=args.device,
        seeds=args.seeds,
        only=args.only,
        reports_dir=args.reports_dir,
        results_dir=args.results_dir,
        data_path=args.data_path,
        extra_parameters=extra,
        jobs=default_jobs(args.device) if args.jobs == "auto" else args.jobs,
        executor=args.executor,
        address=args.address,
        ensemble=args.ensemble,
    )
    for html in htmls:
        print(html)
    return 0


def _plan(args: argparse.Namespace) -> int:
    extra = _extra_parameters(args.param, args.only)
    prepared = prepare(
        profile=args.profile, device=args.device, seeds=args.seeds, only=args.only,
        results_dir=args.results_dir, data_path=args.data_path, extra_parameters=extra,
        reports_dir=tempfile.gettempdir(),  # the plan writes no report
    )  # fmt: skip
    configs = prepared.configs(include_pending=True)
    if not configs:
        print("the selected notebooks train no run")
        return 0
    timings = None
    if not args.no_estimate:
        corpus = load_corpus(prepared.corpus_path)
        print(f"calibrating on {resolve_device(args.device)} ...", file=sys.stderr, flush=True)
        timings = calibrate(configs, corpus, args.device)
    table = plan_table(prepared.grids, prepared.store, timings, device=args.device)
    shown = table.drop(columns="config").assign(estimate=[format_duration(v) for v in
                                                          table["estimate_s"]])  # fmt: skip
    print(shown.drop(columns="estimate_s").to_string(index=False))
    counts = table["status"].map(lambda v: v.split(" ")[0]).value_counts()
    summary = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("done", "partial", "missing"))
    if counts.get("after", 0):
        summary += f", {counts['after']} {PENDING_STATUS} (their value is not chosen yet)"
    line = f"{len(table)} runs: {summary}"
    if timings is not None:
        total = float(table["estimate_s"].fillna(0).sum())
        line += f"; about {format_duration(total)} of training left on one worker"
    print(line)
    return 0


def _report(args: argparse.Namespace) -> int:
    for html in render_reports(args.profile, args.reports_dir):
        print(html)
    return 0


def _train(args: argparse.Namespace) -> int:
    if args.seed is not None:  # before anything is made or written: torch takes < 2**63
        check_seed("seed", args.seed)
    objective = objective_for_layout(args.layout)
    profile = get_profile(args.profile)
    size = subword_size(args.tokenizer)  # validated here: a bad name fails before any work
    if size is None:
        config = profile.config(args.setting, objective, seed=args.seed)
    else:
        config = profile.subword_config(args.setting, objective, size, seed=args.seed)
    check_device(args.device)
    corpus = load_corpus(args.data_path)
    tokenized = corpus.with_tokenizer(config.tokenizer)  # a size the corpus cannot support fails
    print(describe_device(args.device), flush=True)
    run = get_or_train(config, corpus=corpus, results_dir=args.results_dir, device=args.device)
    what = f"run {run.id} ({config.setting}, {config.label}, seed {config.seed})"
    seconds = run.meta.get("train_seconds", float("nan"))
    if run.trained_now:
        print(f"trained {what} in {seconds:.1f} s")
    else:
        print(f"loaded {what} from the store, trained earlier in {seconds:.1f} s")
    metrics = run.metrics(tokenized.token_info(bilingual=run.config.bilingual), by=["language"])
    print(metrics.to_string(index=False))
    return 0


def _runs(args: argparse.Namespace) -> int:
    table = list_runs(args.results_dir)
    print(
        table.to_string(index=False) if len(table) else f"no completed runs in {args.results_dir}"
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    table = verify_store(args.results_dir)
    if table.empty:
        print(f"no runs in {args.results_dir}")
        return 0
    print(table.to_string(index=False))
    bad = int((table["status"] == "corrupt").sum())
    others = int((table["status"] == "not a run").sum())
    print(
        f"{int((table['status'] == 'ok').sum())} ok, {bad} corrupt"
        + (" (trained again when next asked for)" if bad else "")
        + (f"; {others} folder(s) in runs/ that are not runs, left alone" if others else "")
    )
    return EXIT_FAILURE if bad else 0


# The fields ``readable_claims`` shows; a row of claims.json without them cannot be shown.
CLAIM_FIELDS = frozenset(
    {"claim", "statement", "metric", "scope", "A", "B", "A_mean", "B_mean", "diff", "test",
     "n_seeds", "verdict"}
)  # fmt: skip


def _claims(args: argparse.Namespace) -> int:
    profile = get_profile(args.profile).name
    path = Path(args.reports_dir) / profile / "claims.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no claims in {path}: `selfish reproduce --profile {profile}` writes them"
        )
    rows = load_claims(path.parent)
    incomplete = [r for r in rows if not set(r) >= CLAIM_FIELDS]
    if incomplete:
        names = ", ".join(sorted({str(r.get("claim", "?")) for r in incomplete}))
        print(f"{len(incomplete)} row(s) of {path} lack a claim's fields and are not shown: "
              f"{names}", file=sys.stderr)  # fmt: skip
        rows = [r for r in rows if set(r) >= CLAIM_FIELDS]
    table = readable_claims(pd.DataFrame(rows)) if args.all else family_table(rows)
    if table.empty:
        print(f"no primary claim in {path} yet (the chapters that compute them were not run)")
        return 0
    with pd.option_context("display.max_colwidth", 60, "display.width", 250):
        print(table.drop(columns=["statement"]).to_string(index=False))
    primary = [r for r in rows if r.get("family") == "primary"]
    decided = sum(r.get("verdict_holm") != "inconclusive" for r in primary)
    print(f"{len(primary)} primary contrasts, {decided} decided after Holm's correction over "
          f"the family; {len(rows) - len(primary)} exploratory rows ({path})")  # fmt: skip
    return 0


COMMANDS = {
    "claims": _claims,
    "reproduce": _reproduce,
    "plan": _plan,
    "report": _report,
    "train": _train,
    "runs": _runs,
    "verify": _verify,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "check", None) is not None:  # options that only go together
            args.check(args)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return int(exc.code or 0)
    try:
        return COMMANDS[args.command](args)
    except TrainingInterrupted as exc:
        return _fail(args, exc, f"{exc}; run the same command to resume", EXIT_INTERRUPTED)
    except KeyboardInterrupt as exc:
        return _fail(args, exc, "interrupted", EXIT_INTERRUPTED)
    except ValueError as exc:
        # ParameterError and the library's other "invalid x=..." errors (e.g. a device
        # this machine lacks, a corpus file with the wrong checksum).
        return _fail(args, exc, str(exc), EXIT_USAGE)
    except (NotebookError, RayRunError, FileNotFoundError) as exc:
        return _fail(args, exc, str(exc), EXIT_FAILURE)
    except OSError as exc:  # a folder that is a file, read-only, a full disk
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        reason = exc.strerror or str(exc)
        return _fail(args, exc, f"cannot use a path{where}: {reason}", EXIT_USAGE)


def _fail(args: argparse.Namespace, exc: BaseException, message: str, status: int) -> int:
    """One line on stderr (and the traceback with --debug); the exit status."""
    if getattr(args, "debug", False):
        traceback.print_exception(exc)
    print(f"selfish {args.command}: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
