"""The paper build: the executed chapters of ``reports/<profile>/`` and ``claims.json`` into one
page, ``paper.html`` (offline, single file) and ``paper.pdf``, and the published copy in
``paper/``.

The page is assembled here rather than by a documentation generator: its figures are the
notebooks' Vega-Lite outputs and its tables their pandas HTML, which a Markdown-first tool
passes through as raw HTML it cannot number or caption; assembling them directly numbers
every figure and table in one pass (``chapters.number_items``) and keeps the page one file.
The paper's own text lives in ``paper_src/`` (Markdown with Jinja2 expressions for every
computed value, and ``[@key]`` citations of ``paper_src/references.bib``); a value the
sources name but the build does not compute is an error, never a blank.

The PDF is the same page printed by Debian's Chromium (``--headless --print-to-pdf``): the
charts in the PDF are the ones the browser draws, with no second renderer (such as a
LaTeX toolchain) to install or keep in step. Nothing loads from the network: Vega,
Vega-Lite and Vega-Embed are inlined from vl-convert's bundle, and the chapters write
their formulas in Unicode, so no math renderer is needed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...engine.files import write_atomic, write_json
from ...engine.profiles import get_profile
from ...engine.runs import NUMERICS_VERSION
from ...engine.validation import ParameterError
from ...study.claims import load_claims
from ...study.readings import PIPELINE_CHECK_NOTE, pipeline_check_only
from ..charts import EMBED_OPTIONS, javascript_bundle
from ..pipeline import (
    FAILED_SUFFIX,
    NOTEBOOK_PATTERN,
    SUMMARY,
    available_notebooks,
    check_report_files,
)
from ..plan import format_duration
from . import findings
from .chapters import (
    Chapter,
    Context,
    build_chapter,
    code_css,
    link_chapters,
    number_items,
    own_headings,
    paths_left,
    scrub_paths,
    short_id,
)
from .references import Bibliography

ROOT = Path(__file__).resolve().parents[3]
PAPER_SRC = ROOT / "paper_src"
PAPER_DIR = ROOT / "paper"
HTML_NAME, PDF_NAME, MANIFEST_NAME = "paper.html", "paper.pdf", "paper.manifest.json"
PUBLISHED = ("paper.pdf", "paper.html", "claims.json", "manifest.json")
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
# Headless, and nothing in the background that would try to reach the network (what the
# browser tests launch Chromium with, too).
BROWSER_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# ... and printing the page once every chart is drawn.
CHROMIUM_ARGS = (
    *BROWSER_ARGS,
    "--no-pdf-header-footer",
    "--run-all-compositor-stages-before-draw",
    "--virtual-time-budget=30000",  # Vega-Embed draws every chart before the page prints
)
PDF_TIMEOUT_S = 300
# The packages whose versions the reproducibility appendix lists.
PACKAGES = (
    "torch",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "tokenizers",
    "entmax",
    "elotl",
    "altair",
    "vl-convert-python",
    "papermill",
    "nbconvert",
    "nbformat",
    "jupytext",
    "pybtex",
)
_EMBED_SCRIPT = """
document.querySelectorAll("div.selfish-vega").forEach(function (el) {
  var spec = JSON.parse(document.getElementById(el.dataset.spec).textContent);
  vegaEmbed(el, spec, %s).catch(function (err) { console.error(err); });
});
"""
# The printed page is about PRINT_WIDTH_PX wide (A4 less its margins): a wider table gets
# the zoom that fits it (the print stylesheet applies --fit).
PRINT_WIDTH_PX = 680
_FIT_SCRIPT = """
document.querySelectorAll(".table-wrap table").forEach(function (table) {
  var wide = table.scrollWidth;
  if (wide > WIDTH) { table.style.setProperty("--fit", (WIDTH / wide).toFixed(3)); }
});
""".replace("WIDTH", str(PRINT_WIDTH_PX))


class PaperError(RuntimeError):
    """The paper cannot be built as asked (no Chromium for the PDF, a path left in the page)."""


@dataclass(frozen=True)
class PaperBuild:
    """What a build wrote: the page, the PDF (None when not asked for) and the manifest."""

    html: Path
    pdf: Path | None
    manifest: Path


# --- sources and values ---------------------------------------------------------------------


def paper_settings(sources: Path) -> dict[str, Any]:
    """``paper_src/paper.toml``: the title and the sections the sources hold."""
    path = sources / "paper.toml"
    if not path.is_file():
        raise ParameterError("sources", str(sources), "a folder with paper.toml (paper_src/)")
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def render_markdown(markdown: str, bibliography: Bibliography) -> str:
    """Markdown of the paper or of a chapter as HTML: ``[@key]`` citations and author-year
    mentions linked to the bibliography, empty links (``[](#anchor)``) made
    cross-references that the numbering fills in."""
    # nbconvert's Markdown renderer, the one the chapters' own HTML reports use
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    rendered = markdown2html_mistune(bibliography.replace_citations(markdown))
    rendered = re.sub(r'<a href="#([^"]+)"></a>', r'<a class="xref" href="#\1"></a>', rendered)
    return bibliography.link_mentions(rendered)


def render_source(name: str, values: Mapping[str, Any], sources: Path) -> str:
    """The Markdown of ``paper_src/<name>.md`` with its Jinja2 expressions filled from
    ``values``; a name the build does not compute raises ParameterError naming it."""
    # jinja2 is only needed to build the paper (nbconvert brings it)
    import jinja2

    path = sources / f"{name}.md"
    if not path.is_file():
        raise ParameterError("paper section", name, f"a file {name}.md in {sources}")
    environment = jinja2.Environment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    try:
        return environment.from_string(path.read_text(encoding="utf-8")).render(**values)
    except jinja2.UndefinedError as exc:
        raise ParameterError(
            f"{path.name}",
            str(exc),
            "a value the paper build computes: " + ", ".join(sorted(values)),
        ) from None


def repository_commit(root: Path = ROOT) -> str:
    """The commit of the working tree (12 hex digits, '+changes' when tracked files differ
    from it), or 'unknown' outside a git checkout."""

    def git(*args: str, timeout: float) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=timeout, check=True)  # fmt: skip
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short=12", "HEAD", timeout=20)
        changes = git("status", "--porcelain", "--untracked-files=no", timeout=60)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+changes" if changes else "")


def executed_notebooks(report_dir: Path) -> list[Path]:
    """The executed notebooks of a report folder, in order (failed ones left out)."""
    return sorted(
        p
        for p in report_dir.glob("*.ipynb")
        if NOTEBOOK_PATTERN.match(p.stem) and not p.name.endswith(FAILED_SUFFIX)
    )


def machine_paths(summary: Mapping[str, Any], report_dir: Path) -> dict[str, str]:
    """Path -> placeholder, for every path of the build machine a page could show: each
    notebook's injected paths (as given and resolved), the report folder, the repository
    and the home folder."""
    paths: dict[str, str] = {}

    def add(path: str, placeholder: str) -> None:
        for variant in (path, os.path.realpath(path)):
            paths.setdefault(variant, placeholder)

    for entry in summary.get("notebooks", {}).values():
        parameters = entry.get("parameters", {}) if isinstance(entry, Mapping) else {}
        for name in ("results_dir", "data_path", "report_dir"):
            value = parameters.get(name)
            if isinstance(value, str) and value.startswith("/"):
                add(value, f"[{name}]")
    add(str(report_dir), "[report_dir]")
    add(str(ROOT), "[repository]")
    add(str(Path.home()), "[home]")
    return paths


def environment_rows() -> list[tuple[str, str]]:
    """The environment the paper was built in: Python, platform, torch and CUDA, the
    packages of ``PACKAGES``."""
    rows = [
        ("Python", platform.python_version()),
        ("platform", platform.platform()),
        ("torch CUDA build", str(torch.version.cuda or "none (CPU build)")),
        (
            "CUDA device",
            torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none visible",
        ),
    ]
    for package in PACKAGES:
        try:
            rows.append((package, importlib.metadata.version(package)))
        except importlib.metadata.PackageNotFoundError:
            rows.append((package, "not installed"))
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f'<table class="plain"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _numbered_table(anchor: str, caption: str, table: str) -> str:
    return (
        f'<figure class="numbered table" id="{anchor}" data-kind="Table"><figcaption>'
        f'<span class="number" data-label="{anchor}"></span> {html.escape(caption)}'
        f'</figcaption><div class="table-wrap">{table}</div></figure>'
    )


def training_seconds(chapters: Sequence[Chapter]) -> float:
    """The measured training time of every distinct run the chapters read (each run's own
    ``train_seconds``, counted once)."""
    seconds: dict[str, float] = {}
    for chapter in chapters:
        for run in chapter.runs:
            if run.train_seconds is not None:
                seconds.setdefault(run.id, run.train_seconds)
    return sum(seconds.values())


def values_for(
    profile: str,
    summary: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    chapters: Sequence[Chapter],
    missing: Sequence[str],
    numerics: tuple[int, str],
    commit: str,
) -> dict[str, Any]:
    """Every computed value the paper's sources may name (``{{ name }}``)."""
    run_ids = {i for c in chapters for i in c.run_ids}
    seeds = summary.get("seeds") or list(get_profile(profile).seeds)
    tally = findings.counts(rows)
    return {
        "profile": profile,
        "pipeline_check_only": pipeline_check_only(profile),
        "pipeline_check_note": PIPELINE_CHECK_NOTE,
        "seeds": ", ".join(str(s) for s in seeds),
        "n_seeds": len(seeds),
        "n_chapters": len(chapters),
        "chapters_missing": ", ".join(missing),
        "n_runs": len(run_ids),
        "training_time": format_duration(training_seconds(chapters)),
        "n_primary": sum(tally.values()),
        "n_supported": tally["supported"],
        "n_contradicted": tally["contradicted"],
        "n_inconclusive": tally["inconclusive"],
        "supported_claims": ", ".join(findings.statements_with(rows, "supported")),
        "contradicted_claims": ", ".join(findings.statements_with(rows, "contradicted")),
        "n_exploratory": len(findings.exploratory_rows(rows)),
        "family_sentence": findings.family_sentence(rows),
        "findings": findings.findings_markdown(rows),
        "numerics_version": numerics[0],
        "numerics_source": numerics[1],
        "commit": commit,
        "device": summary.get("device_resolved") or summary.get("device") or "unknown",
        "python": summary.get("python", "unknown"),
        "library_version": summary.get("library_version", "unknown"),
        "reproduced_started": summary.get("started") or "unknown",
        "reproduced_finished": summary.get("finished") or "unknown",
    }


# --- the page -----------------------------------------------------------------------------------


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>\n{body}\n</section>'


def _contents(entries: Sequence[tuple[str, str]]) -> str:
    items = "".join(f'<li><a href="#{a}">{html.escape(t)}</a></li>' for a, t in entries)
    return f'<nav id="contents"><h2>Contents</h2><ol>{items}</ol></nav>'


def _runs_appendix(chapters: Sequence[Chapter]) -> str:
    rows = []
    for chapter in chapters:
        seconds = [r.train_seconds for r in chapter.runs if r.train_seconds is not None]
        rows.append(
            (
                chapter.name,
                len(chapter.run_ids),
                ", ".join(map(str, chapter.seeds)),
                format_duration(sum(seconds)) if seconds else "?",
                " ".join(short_id(i) for i in chapter.run_ids) or "none",
            )
        )
    return _numbered_table(
        "tbl-runs",
        "The runs each chapter read: count, seeds, their measured training time and "
        "their ids (short; the manifest lists them whole)",
        _table(("chapter", "runs", "seeds", "training time", "run ids"), rows),
    )


def _reproducibility_tables(summary: Mapping[str, Any], chapters: Sequence[Chapter]) -> str:
    reproduction = [
        ("profile", summary.get("profile", "")),
        ("seeds", ", ".join(str(s) for s in summary.get("seeds", []))),
        (
            "device (asked, resolved)",
            f"{summary.get('device', '?')}, {summary.get('device_resolved', '?')}",
        ),
        ("Python", summary.get("python", "?")),
        ("selfish_lib version", summary.get("library_version", "?")),
        ("started", summary.get("started") or "?"),
        ("finished", summary.get("finished") or "?"),
        ("distinct runs read", len({i for c in chapters for i in c.run_ids})),
        ("measured training time", format_duration(training_seconds(chapters))),
    ]
    notebooks = summary.get("notebooks", {})
    executed = [
        (name, entry.get("status", "?"), format_duration(entry.get("seconds")))
        for name, entry in sorted(notebooks.items())
        if isinstance(entry, Mapping)
    ]
    return (
        _numbered_table(
            "tbl-reproduction",
            "The reproduction, as summary.json records it",
            _table(("what", "value"), reproduction),
        )
        + _numbered_table(
            "tbl-notebooks",
            "Each notebook's execution: status and wall time",
            _table(("notebook", "status", "time"), executed),
        )
        + _numbered_table(
            "tbl-environment",
            "The environment the paper was built in",
            _table(("what", "version"), environment_rows()),
        )
    )


def _scripts() -> str:
    bundle = javascript_bundle().replace("</script", "<\\/script")
    embed = _EMBED_SCRIPT % json.dumps({"renderer": "svg", **EMBED_OPTIONS})
    return f"<script>{bundle}</script>\n<script>{embed}{_FIT_SCRIPT}</script>"


def assemble(
    report_dir: Path,
    sources: Path = PAPER_SRC,
    *,
    commit: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """The paper's HTML for the report folder ``report_dir`` and its manifest (without the
    files' checksums). Reads ``summary.json``, ``claims.json`` and every executed notebook;
    writes nothing."""
    profile = report_dir.name
    get_profile(profile)
    notebooks = executed_notebooks(report_dir)
    if not notebooks:
        raise FileNotFoundError(
            f"no executed notebooks in {report_dir}: run `selfish reproduce "
            f"--profile {profile}` first"
        )
    summary = (
        json.loads((report_dir / SUMMARY).read_text(encoding="utf-8"))
        if (report_dir / SUMMARY).is_file()
        else {}
    )
    rows = load_claims(report_dir)
    commit = commit if commit is not None else repository_commit()
    recorded = summary.get("numerics_version")
    numerics = (
        (int(recorded), "recorded by the reproduction")
        if recorded is not None
        else (NUMERICS_VERSION, "the code's at build time")
    )
    settings = paper_settings(sources)
    bibliography = Bibliography(sources / settings.get("bibliography", "references.bib"))
    names = [p.stem for p in notebooks]
    context = Context(
        profile=profile,
        profile_seeds=summary.get("seeds") or get_profile(profile).seeds,
        numerics_version=numerics[0],
        commit=commit,
        chapters=names,
        render_markdown=lambda text: render_markdown(text, bibliography),
    )
    chapters = [build_chapter(path, context) for path in notebooks]
    every = [name for name in _all_notebook_names() if name not in names]
    values = values_for(profile, summary, rows, chapters, every, numerics, commit)

    def source(name: str) -> str:
        rendered = render_markdown(render_source(name, values, sources), bibliography)
        return link_chapters(own_headings(rendered, name), names)

    front = [
        ("abstract", "Abstract"),
        ("introduction", "Introduction"),
        ("claims", "Claims at a glance"),
        ("method", "Method"),
    ]
    appendices = [
        ("appendix-reproducibility", "Appendix A · Reproducibility"),
        ("appendix-exploratory", "Appendix B · Exploratory rows"),
        ("appendix-runs", "Appendix C · Runs"),
    ]
    # claims.md places the table with {{ claims_table }} (one HTML block Markdown keeps)
    values["claims_table"] = _numbered_table(
        "tbl-claims",
        "Claims at a glance: the primary family of contrasts, after Holm's "
        "correction over the family",
        findings.glance_table(rows, names),
    )
    sections_html = [
        _section("abstract", "Abstract", source("abstract")),
        _contents(
            [
                *front[1:],
                *((c.anchor, _plain(c.title)) for c in chapters),
                *appendices,
                ("references", "References"),
            ]
        ),
        _section("introduction", "Introduction", source("introduction")),
        _section("claims", "Claims at a glance", source("claims")),
        _section("method", "Method", source("method")),
        *(c.html for c in chapters),
        _section(
            appendices[0][0],
            appendices[0][1],
            source("reproducibility") + _reproducibility_tables(summary, chapters),
        ),
        _section(
            appendices[1][0],
            appendices[1][1],
            source("exploratory")
            + _numbered_table(
                "tbl-exploratory",
                "Every exploratory row of claims.json (no correction: these rows "
                "decide none of the study's questions)",
                findings.exploratory_table(rows, names),
            ),
        ),
        _section(appendices[2][0], appendices[2][1], _runs_appendix(chapters)),
    ]
    references = _section("references", "References", bibliography.list_html())
    title = html.escape(settings["title"])
    banner = (
        f'<p class="banner">{html.escape(PIPELINE_CHECK_NOTE)}</p>'
        if pipeline_check_only(profile)
        else ""
    )
    byline = (
        f"Built from the {html.escape(profile)} profile's report (seeds "
        f"{html.escape(values['seeds'])}) at commit <code>{html.escape(commit)}</code>, "
        f"numerics version {numerics[0]}."
    )
    css = (sources / "paper.css").read_text(encoding="utf-8") + "\n" + code_css()
    body = "\n".join([*sections_html, references])
    section_names = {a: t for a, t in [*front, *appendices, ("references", "References")]}
    section_names.update({c.anchor: f"chapter {c.number}" for c in chapters})
    page = (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>\n{css}\n</style>\n</head>\n<body>\n"
        f'<main class="paper">\n<header><h1 class="title">{title}</h1>\n'
        f'<p class="byline">{byline}</p>{banner}</header>\n{body}\n</main>\n{_scripts()}\n'
        f"</body>\n</html>\n"
    )
    page, numbers = number_items(page, section_names)
    paths = machine_paths(summary, report_dir)
    page = scrub_paths(page, paths)
    left = paths_left(page, paths)
    if left:  # scrub_paths replaces every one: a path left is a bug, never published
        raise PaperError(f"the paper still shows paths of this machine: {left}")
    manifest = {
        "profile": profile,
        "commit": commit,
        "numerics_version": numerics[0],
        "numerics_version_source": numerics[1],
        "library_version": summary.get("library_version"),
        "built": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "reproduced": {"started": summary.get("started"), "finished": summary.get("finished")},
        "figures": sum(1 for n in numbers.values() if n.startswith("Figure")),
        "tables": sum(1 for n in numbers.values() if n.startswith("Table")),
        "claims": {"primary": values["n_primary"], "exploratory": values["n_exploratory"]},
        "chapters": {
            c.name: {
                "seeds": c.seeds or list(context.profile_seeds),
                "runs": c.run_ids,
                "figures": [numbers[a] for a in c.figures],
                "tables": [numbers[a] for a in c.tables],
            }
            for c in chapters
        },
        "chapters_missing": every,
    }
    return page, manifest


def _plain(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def _all_notebook_names() -> list[str]:
    return list(available_notebooks())


# --- the files --------------------------------------------------------------------------------


def find_chromium(explicit: str | os.PathLike | None = None) -> Path | None:
    """The Chromium to print with: ``explicit``, else ``$SELFISH_CHROMIUM``, else the first
    of ``CHROMIUM_CANDIDATES`` found; None when there is none."""
    for candidate in (explicit, os.environ.get("SELFISH_CHROMIUM"), *CHROMIUM_CANDIDATES):
        if not candidate:
            continue
        path = Path(candidate) if os.sep in str(candidate) else shutil.which(str(candidate))
        if path is not None and Path(path).is_file():
            return Path(path)
    return None


def print_pdf(page: Path, pdf: Path, chromium: str | os.PathLike | None = None) -> Path:
    """Print the HTML file ``page`` to ``pdf`` with headless Chromium (written under a
    temporary name, then renamed). PaperError when there is no Chromium or it fails."""
    browser = find_chromium(chromium)
    if browser is None:
        raise PaperError(
            "no Chromium to print the PDF with (Debian: apt-get install chromium; "
            "or set SELFISH_CHROMIUM); the HTML was written, --no-pdf skips "
            "the PDF"
        )
    fd, tmp = tempfile.mkstemp(dir=pdf.parent, prefix=f".{pdf.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with tempfile.TemporaryDirectory(prefix="selfish-chromium-") as profile_dir:
            command = [
                str(browser),
                *CHROMIUM_ARGS,
                f"--user-data-dir={profile_dir}",
                f"--print-to-pdf={tmp}",
                page.resolve().as_uri(),
            ]
            done = subprocess.run(command, capture_output=True, text=True, timeout=PDF_TIMEOUT_S)
        if done.returncode != 0 or Path(tmp).stat().st_size == 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise PaperError(
                f"{browser} could not print {page.name} ({done.returncode}): " + " | ".join(tail)
            )
        with open(tmp, "rb") as fh:
            if fh.read(5) != b"%PDF-":
                raise PaperError(f"{browser} wrote something that is not a PDF")
        os.chmod(tmp, 0o644)
        os.replace(tmp, pdf)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return pdf


def file_record(path: Path) -> dict[str, Any]:
    """Size and sha256 of a file, as a manifest lists it."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"size": path.stat().st_size, "sha256": digest}


def build_paper(
    profile: str = "paper",
    reports_dir: str | os.PathLike = "reports",
    *,
    sources: str | os.PathLike = PAPER_SRC,
    pdf: bool = True,
    chromium: str | os.PathLike | None = None,
    commit: str | None = None,
) -> PaperBuild:
    """Build ``<reports_dir>/<profile>/paper.html`` (and ``paper.pdf`` unless ``pdf`` is
    False) from the executed notebooks there, with ``paper.manifest.json`` beside them.

    A damaged summary.json or claims.json is rebuilt from the chapters' own files first
    (``pipeline.check_report_files``). Raises FileNotFoundError when the folder has no
    executed notebook, PaperError when the PDF cannot be printed.
    """
    name = get_profile(profile).name
    report_dir = Path(reports_dir) / name
    if not report_dir.is_dir():
        raise FileNotFoundError(
            f"no report in {report_dir}: run `selfish reproduce --profile {name}` first"
        )
    report_dir = report_dir.resolve()
    check_report_files(report_dir)
    page, manifest = assemble(report_dir, Path(sources), commit=commit)
    if manifest["numerics_version"] != NUMERICS_VERSION:  # built, but said out loud
        print(f"{report_dir} was computed under numerics version {manifest['numerics_version']}"
              f"; the code computes version {NUMERICS_VERSION}: run `selfish reproduce "
              f"--profile {name}` again for numbers the code stands behind",
              file=sys.stderr)  # fmt: skip
    html_path = write_atomic(report_dir / HTML_NAME, page)
    pdf_path = print_pdf(html_path, report_dir / PDF_NAME, chromium) if pdf else None
    manifest["files"] = {p.name: file_record(p) for p in (html_path, pdf_path) if p is not None}
    manifest_path = write_json(report_dir / MANIFEST_NAME, manifest)
    return PaperBuild(html_path, pdf_path, manifest_path)


# --- the published paper ------------------------------------------------------------------------


def check_publishable(profile: str) -> str:
    """``profile``'s name when its paper may be published: not a profile whose numbers only
    check the pipeline (smoke). ParameterError otherwise, before anything is built."""
    name = get_profile(profile).name
    if pipeline_check_only(name):
        raise ParameterError(
            "profile",
            name,
            "a profile whose numbers are results (paper): the smoke profile only checks the "
            "pipeline",
        )
    return name


def publish_paper(
    profile: str = "paper",
    reports_dir: str | os.PathLike = "reports",
    paper_dir: str | os.PathLike = PAPER_DIR,
) -> Path:
    """Copy the last build of ``<reports_dir>/<profile>/`` into ``paper_dir``: paper.pdf,
    paper.html, claims.json (``[]`` when none of the report's chapters writes claims) and
    manifest.json (the build's, with the published files' checksums). The profile of a
    pipeline check (smoke) is refused: its numbers are no results. Files go in under
    temporary names, then are renamed."""
    name = check_publishable(profile)
    report_dir = Path(reports_dir) / name
    needed = [report_dir / n for n in (PDF_NAME, HTML_NAME, MANIFEST_NAME)]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{report_dir} has no {', '.join(missing)}: run `selfish paper "
            f"--profile {name}` (with the PDF) first"
        )
    manifest = json.loads((report_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    target = Path(paper_dir)
    target.mkdir(parents=True, exist_ok=True)
    for source in needed[:2]:
        write_atomic(target / source.name, source.read_bytes())
    # the claims the build read: none when no chapter of the report writes claims
    claims = report_dir / "claims.json"
    write_atomic(target / "claims.json", claims.read_bytes() if claims.is_file() else b"[]\n")
    manifest["files"] = {n: file_record(target / n) for n in PUBLISHED if n != "manifest.json"}
    write_json(target / "manifest.json", manifest)
    return target


def published_problems(paper_dir: str | os.PathLike = PAPER_DIR) -> list[str]:
    """What is wrong with the published paper in ``paper_dir`` ([] when nothing): a file
    missing or different from the manifest's checksum, a manifest that cannot be read, a
    numerics version other than the code's (the paper is stale: its numbers are not the
    ones the code computes now), a profile that only checks the pipeline."""
    folder = Path(paper_dir)
    path = folder / "manifest.json"
    if not path.is_file():
        return [f"{path} is missing: `selfish paper --profile paper --publish` writes it"]
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [f"{path} cannot be read ({type(exc).__name__})"]
    if not isinstance(manifest, dict):
        return [f"{path} is not a JSON object"]
    problems = []
    version = manifest.get("numerics_version")
    if version != NUMERICS_VERSION:
        problems.append(
            f"stale: the paper was built under numerics version {version}, the code computes "
            f"version {NUMERICS_VERSION}; run `make reproduce PROFILE=paper` and "
            "`selfish paper --profile paper --publish`"
        )
    if pipeline_check_only(str(manifest.get("profile"))):
        problems.append(
            f"the published paper is the {manifest.get('profile')} profile's, "
            "whose numbers only check the pipeline"
        )
    files = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    for name in PUBLISHED:
        if name == "manifest.json":
            continue
        published = folder / name
        if not published.is_file():
            problems.append(f"{published} is missing")
        elif name in files and file_record(published) != files[name]:
            problems.append(f"{published} differs from the manifest's checksum")
        elif name not in files:
            problems.append(f"the manifest lists no checksum of {name}")
    return problems


__all__ = [
    "PaperBuild",
    "PaperError",
    "assemble",
    "build_paper",
    "check_publishable",
    "find_chromium",
    "print_pdf",
    "publish_paper",
    "published_problems",
    "repository_commit",
]
