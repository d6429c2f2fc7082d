"""The ``selfish`` command: reproduce the report, re-render it, train one run, list and
verify the runs of the store.

    selfish reproduce --profile smoke --only 01_hypothesis
    selfish reproduce --profile paper --executor ray --address auto
    selfish report --profile smoke
    selfish train --profile smoke --setting single --layout 2 --seed 0
    selfish train --setting bilingual --language nahuatl --alphabet shared
    selfish runs
    selfish verify
    selfish claims --profile smoke
    selfish paper --profile smoke

A bad parameter, or a path that cannot be used (a file where a folder should be, a
read-only folder, a full disk), prints one line to stderr naming it and exits with
status 2; a failing notebook, a missing file or a corrupt run found by ``verify``
exits with status 1; Ctrl-C, and SIGTERM alike, exits with status 130 after saying
what was kept. Add ``--debug`` to see the traceback of any of these.
"""

from __future__ import annotations

import argparse
import ast
import math
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..engine.corpus import load_corpus, subword_size
from ..engine.distributed import MAX_TASKS_PER_GPU, RayRunError
from ..engine.ensemble import CUDA_ENSEMBLE, default_ensemble
from ..engine.executors import EXECUTORS, default_jobs
from ..engine.languages import (
    ALPHABETS,
    CIPHER,
    LANGUAGES,
    check_alphabet,
    check_installed_language,
)
from ..engine.objectives import objective_for_layout
from ..engine.profiles import PROFILE_NAMES, SETTINGS, get_profile
from ..engine.runs import get_or_train, list_runs, store_is_writable, verify_store
from ..engine.training import (
    TrainingInterrupted,
    describe_device,
    resolve_device,
    sigterm_as_interrupt,
    training_corpus,
)
from ..engine.validation import LAYOUT_MAX, ParameterError, check_ranged, check_seed
from ..engine.validation import shown as short
from ..study.claims import family_table, load_claims, readable_claims
from .paper import (
    PaperError,
    build_paper,
    check_publishable,
    publish_paper,
    published_problems,
)
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
    """A layout as written: a number, or inf (CE). Its range is checked by ``_train``
    (``check_ranged``); a finite number too large for a float (1e400) is refused here,
    never read as inf."""
    try:
        value = float(text)
    except ValueError:
        value = None
    spelled_inf = text.strip().lstrip("+").lower() in ("inf", "infinity")
    if value is None or (math.isinf(value) and not spelled_inf):
        raise argparse.ArgumentTypeError(
            f"invalid layout {short(text)}: expected a number from 0 to {LAYOUT_MAX:g}, or inf"
        ) from None
    return value


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
        default=None,
        metavar="N",
        help="train runs of one shape (the seeds, objectives and dropout rates of a setting) "
        "in groups of up to N as one stacked model; numbers match the solo runs' within a "
        "tested tolerance, not bit for bit (default: 1 on a CPU, every run alone; "
        f"{CUDA_ENSEMBLE} on a GPU)",
    )
    rep.add_argument(
        "--tasks-per-gpu",
        type=_positive("--tasks-per-gpu"),
        default=1,
        metavar="N",
        help="with --executor ray on CUDA: Ray tasks that share one GPU, each asking for "
        "1/N of it (default 1: a GPU per task; a paper-profile run fills a small part of "
        f"a large GPU; at most {MAX_TASKS_PER_GPU})",
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
    train.add_argument(
        "--language", default=CIPHER,
        help=f"the second language of a bilingual or low_only run: {', '.join(LANGUAGES)} "
        "(default cipher: English with shifted ids; the others are real text from elotl)",
    )  # fmt: skip
    train.add_argument(
        "--alphabet", default=None,
        help=f"with a real --language: {' or '.join(ALPHABETS)} (default disjoint): its "
        "characters get ids of their own, or share English's where English has them",
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

    paper = sub.add_parser(
        "paper", help="build reports/<profile>/paper.html and paper.pdf from the chapters"
    )
    paper.add_argument("--profile", default="paper", help=f"one of {profiles}")
    paper.add_argument("--reports-dir", default="reports")
    paper.add_argument("--no-pdf", action="store_true", help="write the HTML only")
    paper.add_argument(
        "--publish", action="store_true",
        help="then copy the build into --paper-dir (the paper profile's is kept in git)",
    )  # fmt: skip
    paper.add_argument("--paper-dir", default="paper", help="where --publish writes (paper)")
    paper.add_argument(
        "--check-published", action="store_true",
        help="only check the published paper in --paper-dir (stale numerics, checksums)",
    )  # fmt: skip

    runs = sub.add_parser("runs", help="list the completed runs")
    runs.add_argument("--results-dir", default="results")

    verify = sub.add_parser("verify", help="check every run of the store against its manifest")
    verify.add_argument("--results-dir", default="results")
    for command in (rep, plan, report, train, runs, verify, paper):
        command.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return parser


def _check_reproduce(command: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Options that only go together: --address with --executor ray, and not with --jobs
    (a cluster's own resources decide); a usage error (status 2) otherwise."""
    if args.address is not None and args.executor != "ray":
        command.error("--address ADDR is for --executor ray only (add --executor ray)")
    if args.tasks_per_gpu != 1 and args.executor != "ray":
        command.error("--tasks-per-gpu N is for --executor ray only (local workers keep one "
                      "GPU each)")  # fmt: skip
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
        ensemble=default_ensemble(args.device) if args.ensemble is None else args.ensemble,
        tasks_per_gpu=args.tasks_per_gpu,
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
    objective = objective_for_layout(check_ranged("layout", args.layout, allow_inf=True))
    profile = get_profile(args.profile)
    # a second language, checked before any work (a real one needs elotl installed)
    language = check_installed_language("language", args.language)
    if args.alphabet is not None:
        check_alphabet("alphabet", args.alphabet)
    size = subword_size(args.tokenizer)  # validated here: a bad name fails before any work
    if language != CIPHER:
        if args.setting == "single":
            raise ParameterError(
                "setting", args.setting,
                f"'bilingual' or 'low_only' with --language {language} (a second language)",
            )  # fmt: skip
        config = profile.config(args.setting, objective, seed=args.seed, language=language,
                                alphabet=args.alphabet or "disjoint", tokenizer=args.tokenizer,
                                language_chars=profile.real_language["chars"])  # fmt: skip
    elif args.alphabet is not None:
        raise ParameterError("alphabet", args.alphabet, "no --alphabet with --language cipher "
                             "(its second alphabet is English's ids shifted)")  # fmt: skip
    elif size is None:
        config = profile.config(args.setting, objective, seed=args.seed)
    else:
        config = profile.subword_config(args.setting, objective, size, seed=args.seed)
    check_device(args.device)
    corpus = load_corpus(args.data_path)
    tokenized = corpus.with_tokenizer(config.tokenizer)  # a size the corpus cannot support fails
    if language != CIPHER:  # loaded and verified against the config's sha256 here
        tokenized = training_corpus(corpus, config)
        print(f"second language: {language} ({config.alphabet} alphabet), elotl "
              f"{config.elotl_version}, corpus sha256 {config.language_sha256}")  # fmt: skip
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
    writable = store_is_writable(Path(args.results_dir) / "runs")
    fate = "set aside and trained again when next asked for" if writable else (
        "the store is read-only: they stay where they are and are never served")  # fmt: skip
    print(
        f"{int((table['status'] == 'ok').sum())} ok, {bad} corrupt"
        + (f" ({fate})" if bad else "")
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


def _paper(args: argparse.Namespace) -> int:
    """Build the paper (or, with --check-published, only check the published one)."""
    if args.check_published:
        problems = published_problems(args.paper_dir)
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{args.paper_dir}: " + (f"{len(problems)} problem(s)" if problems else "up to date"))
        return EXIT_FAILURE if problems else 0
    if args.publish:  # refused before the build, not after it
        if args.no_pdf:
            raise ParameterError("--publish", "with --no-pdf", "a build with its PDF")
        check_publishable(args.profile)
    try:
        built = build_paper(args.profile, args.reports_dir, pdf=not args.no_pdf)
    except PaperError as exc:
        return _fail(args, exc, str(exc), EXIT_FAILURE)
    for path in (built.html, built.pdf):
        if path is not None:
            print(path)
    if args.publish:
        print(publish_paper(args.profile, args.reports_dir, args.paper_dir))
    return 0


COMMANDS = {
    "claims": _claims,
    "paper": _paper,
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
        with sigterm_as_interrupt():  # kill, timeout and Slurm stop a command as Ctrl-C does
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
