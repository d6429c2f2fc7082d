"""Papermill orchestration: profile -> every notebook executed -> offline report.

``run_pipeline`` executes ``notebooks/NN_name.py`` (py:percent, read with
jupytext) in the current interpreter's ``python3`` kernel, with the notebooks
folder as working directory, and writes to ``reports/<profile>/``:

- ``NN_name.ipynb``: the executed notebook;
- ``NN_name.html``: an HTML report that needs no network: no require.js, no
  MathJax (write formulas with Unicode and <sub>/<sup>), Vega-Lite charts
  drawn interactively by one inlined copy of Vega-Embed with their vl-convert
  SVG as the fallback, widgets replaced by a note;
- ``figures/``: static figures the notebooks save (``charts.save_figure``);
- ``summary.json``: profile, device, seeds, library version and, per notebook,
  status, timestamps, duration and injected parameters, plus ``fragments``.

Parameters are injected after the cell tagged ``parameters``. Every notebook
receives the common ones (``report.parameters.COMMON``), whether or not its
parameters cell defines them: ``profile``, ``device``, ``seeds``,
``results_dir``, ``data_path``, ``progress`` (False: progress bars inside a
headless kernel are invisible), ``report_dir`` (the absolute
``reports/<profile>``) and ``notebook_name`` (its ``NN_name``); then the
overrides of its own parameters given in ``extra_parameters``. The notebook's
study object (``report.notebook.open_study``) validates them all.

Fragments: a notebook contributes numbers to ``summary.json`` with
``study.fragment({...})``, which calls ``write_fragment(report_dir, "NN_name",
{...})`` to write ``<report_dir>/NN_name.summary.json`` (nothing when
``report_dir`` is None, i.e. when the notebook runs interactively). After each
notebook the pipeline gathers every fragment of the folder under
``summary["fragments"]``.

Claims: a chapter's claims rows (``study.claims.save_claims``) are kept as
``NN_name.claims.json`` and merged into ``claims.json``, every chapter's rows.

Everything is written under a temporary name and renamed: a failing notebook
leaves ``NN_name.failed.ipynb`` for inspection and no ``NN_name.ipynb`` or
``.html``. A ``summary.json`` or ``claims.json`` that cannot be read (truncated, or
valid JSON of another shape) is never replaced silently: before any work it is
set aside as ``<name>.<time>.damaged`` and rebuilt from the chapters' own outputs
in the folder (the executed notebooks and their fragments; the chapters' claims
files), with one line on stderr that says so. Papermill, nbconvert, jupytext,
nbformat and jinja2 are imported only when a notebook is read, executed or rendered.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .. import __version__
from ..engine.corpus import load_corpus, resolve_corpus_path
from ..engine.distributed import MAX_TASKS_PER_GPU
from ..engine.executors import check_executor, train_all
from ..engine.files import (
    check_writable_folder,
    exclusive_lock,
    holder_message,
    write_atomic,
    write_json,
)
from ..engine.profiles import get_profile
from ..engine.runs import NUMERICS_VERSION, config_hash, results_root
from ..engine.training import resolve_device
from ..engine.validation import ParameterError, check_int, check_seeds
from ..study.claims import DamagedClaims, family_correction, merged_claims, read_claims_file
from .charts import EMBED_OPTIONS, javascript_bundle, spec_of_output
from .parameters import COMMON, NOTEBOOK_NAME, check_device, own_parameters
from .parameters import check_study as check_study  # re-exported: pipeline.check_study
from .plan import (
    PENDING,
    calibrate,
    declared_runs,
    estimate_seconds,
    format_duration,
    notebook_parameters_for_plan,
    run_status,
    shape_of,
)

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
KERNEL = "python3"
SUMMARY = "summary.json"
CLAIMS = "claims.json"  # written by more than one chapter (study.claims.save_claims)
FRAGMENT_SUFFIX = ".summary.json"
CLAIMS_SUFFIX = ".claims.json"  # one chapter's own claims rows, from which claims.json is rebuilt
DAMAGED_SUFFIX = ".damaged"  # a report file that could not be read, set aside
FAILED_SUFFIX = ".failed.ipynb"
JOBS_PER_CPU = 4
NOTEBOOK_PATTERN = NOTEBOOK_NAME
COMMON_PARAMETERS = tuple(COMMON)


class NotebookError(RuntimeError):
    """A notebook raised during execution; says which notebook, which cell and what."""

    def __init__(
        self,
        notebook: str,
        cell_index: int,
        execution_count: int | None,
        first_line: str,
        ename: str,
        evalue: str,
        kept: Path | None,
    ) -> None:
        self.notebook, self.cell_index, self.execution_count = notebook, cell_index, execution_count
        self.first_line, self.ename, self.evalue, self.kept = first_line, ename, evalue, kept
        where = f"cell {cell_index} (In [{execution_count}]: {first_line!r})"
        kept_note = f"; partially executed notebook kept as {kept}" if kept else ""
        super().__init__(f"notebook {notebook} failed in {where}: {ename}: {evalue}{kept_note}")


# --- small helpers --------------------------------------------------------------------


def _now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def write_fragment(
    report_dir: str | os.PathLike | None, name: str, data: Mapping[str, Any]
) -> Path | None:
    """Write ``<report_dir>/<name>.summary.json`` for the pipeline's summary; no-op without a dir.

    ``data`` is any JSON-like mapping (numpy scalars are unwrapped, inf/nan
    become strings). Returns the path written, or None when ``report_dir`` is None.
    """
    if report_dir is None:
        return None
    if not NOTEBOOK_PATTERN.match(name):
        raise ParameterError("name", name, "a notebook name such as '01_hypothesis'")
    return write_json(Path(report_dir) / f"{name}{FRAGMENT_SUFFIX}", dict(data))


def read_fragments(report_dir: str | os.PathLike) -> dict[str, Any]:
    """Every fragment in ``report_dir``, keyed by notebook name (one that cannot be read
    is set aside as damaged, with a line saying so)."""
    out = {}
    for path in sorted(Path(report_dir).glob(f"*{FRAGMENT_SUFFIX}")):
        data, problem = _read_json(path)
        if data is _MISSING:  # removed since the folder was listed
            continue
        if problem is not None:
            aside = _set_aside(path)
            print(f"{path} is damaged ({problem}): set aside as {aside.name}; run its "
                  "notebook again to write it", file=sys.stderr)  # fmt: skip
            continue
        out[path.name[: -len(FRAGMENT_SUFFIX)]] = data
    return out


def max_jobs() -> int:
    """The most runs a reproduction trains at once: ``JOBS_PER_CPU`` per CPU core of this
    machine (each a worker process with its own copy of the corpus; more would only wait
    their turn)."""
    return JOBS_PER_CPU * (os.cpu_count() or 1)


# --- notebooks and their parameters -------------------------------------------------------


def available_notebooks(notebooks_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """The notebooks of a folder (``NN_name.py``), by name, in order."""
    folder = Path(notebooks_dir) if notebooks_dir is not None else NOTEBOOKS_DIR
    if not folder.is_dir():
        raise ParameterError("notebooks_dir", str(folder), "an existing folder of NN_name.py")
    paths = sorted(p for p in folder.glob("*.py") if NOTEBOOK_PATTERN.match(p.stem))
    return {p.stem: p for p in paths}


def select_notebooks(
    only: Iterable[str] | None, notebooks_dir: str | os.PathLike | None = None
) -> list[Path]:
    """The notebooks to run: all, or those named in ``only`` (full name or 'NN' prefix)."""
    found = available_notebooks(notebooks_dir)
    allowed = "names among " + (", ".join(found) or "(none: the folder has no NN_name.py)")
    if only is None:
        if not found:
            raise ParameterError("notebooks_dir", str(notebooks_dir), allowed)
        return list(found.values())
    if isinstance(only, str):
        only = [only]
    chosen = []
    for name in only:
        matches = [p for stem, p in found.items() if name in (stem, stem[:2])]
        if len(matches) != 1:
            raise ParameterError("only", name, allowed)
        chosen.append(matches[0])
    if not chosen:
        raise ParameterError("only", list(only), "at least one notebook: " + allowed)
    return sorted(set(chosen))


def read_notebook(path: str | os.PathLike):
    """The notebook of a py:percent file (or an .ipynb), as an nbformat node."""
    import jupytext  # only to read notebooks: not needed to import this module

    return jupytext.read(Path(path))


def parameters_source(nb) -> str:
    """The source of the cell tagged ``parameters`` ('' if none)."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            return cell.source
    return ""


def parameter_names(nb) -> list[str]:
    """Names assigned at top level of the cell tagged ``parameters`` ([] if none)."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            names = []
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Assign):
                    names += [t.id for t in node.targets if isinstance(t, ast.Name)]
                elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    names.append(node.target.id)
            return list(dict.fromkeys(names))
    return []


def notebook_parameters(
    name: str,
    names: Sequence[str],
    common: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The parameters to inject into notebook ``name`` whose parameters cell defines ``names``.

    Every common value is passed, and ``notebook_name`` is ``name``. Each
    override must be one of the notebook's own parameters: defined by its
    parameters cell (``names``) or listed for it in ``report.parameters``, and
    not a common one, which comes from ``run_pipeline``'s arguments (a typo
    raises ParameterError).
    """
    params = {**common, "notebook_name": name}
    own = [n for n in dict.fromkeys([*names, *own_parameters(name)]) if n not in COMMON]
    for key, value in (overrides or {}).items():
        if key in COMMON:
            allowed = (
                "a parameter of the notebook itself: " + (", ".join(own) or "(it has none)")
                + f"; {key} belongs to the whole reproduction (its own option)"
            )  # fmt: skip
            raise ParameterError(f"extra_parameters[{name!r}]", key, allowed)
        if key not in own:
            allowed = "a parameter of " + name + ": " + (", ".join(own) or "(it has none)")
            raise ParameterError(f"extra_parameters[{name!r}]", key, allowed)
        params[key] = value
    return params


class _CommonParameterFilter(logging.Filter):
    """Drops papermill's warning that a common parameter is not in a parameters cell:
    every notebook takes the common parameters, through its study object."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        prefix = "Passed unknown parameter: "
        return not (message.startswith(prefix) and message[len(prefix) :] in COMMON)


# --- execution and rendering ------------------------------------------------------------


def execute_notebook(
    source: str | os.PathLike,
    output: str | os.PathLike,
    parameters: Mapping[str, Any],
    *,
    cwd: str | os.PathLike,
    progress: bool = True,
) -> Path:
    """Execute ``source`` with ``parameters`` and write the result to ``output`` (.ipynb).

    On an exception in a cell, the partially executed notebook is kept as
    ``<stem>.failed.ipynb`` beside ``output`` and NotebookError is raised.
    """
    # papermill starts kernels: imported only when a notebook is executed.
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source, output = Path(source), Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    running = output.with_name(f".{output.stem}.running.ipynb")
    failed = output.with_name(output.stem + FAILED_SUFFIX)
    bar = {"desc": output.stem, "leave": False, "position": 1} if progress else False
    quiet = _CommonParameterFilter()
    papermill_log = logging.getLogger("papermill")
    papermill_log.addFilter(quiet)
    try:
        papermill.execute_notebook(
            read_notebook(source),
            str(running),
            parameters=dict(parameters),
            kernel_name=KERNEL,
            language="python",
            # the kernel's working directory, given to the kernel alone: papermill's own
            # cwd= changes this process's, which notebooks executed at once would share
            resources={"metadata": {"path": str(Path(cwd).resolve())}},
            progress_bar=bar,
        )
    except PapermillExecutionError as exc:
        kept = None
        if running.exists():
            os.replace(running, failed)
            kept = failed
        first = next((line for line in exc.source.splitlines() if line.strip()), "")
        raise NotebookError(
            output.stem, exc.cell_index, exc.exec_count, first, exc.ename, exc.evalue, kept
        ) from None
    except BaseException:
        running.unlink(missing_ok=True)
        raise
    finally:
        papermill_log.removeFilter(quiet)
    os.replace(running, output)
    failed.unlink(missing_ok=True)
    return output


_TEMPLATE_NAME = "selfish_offline.html.j2"
# The lab template minus everything it would fetch from a CDN; the footer
# carries the inlined Vega bundle when the notebook has charts.
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block extra_css -%}
<style type="text/css">
main { max-width: 1280px; margin: 0 auto; }
.selfish-vega { overflow-x: auto; }
.selfish-note { font-style: italic; color: var(--jp-content-font-color2); }
</style>
{%- endblock extra_css -%}
{%- block footer_js -%}{{ resources.get("selfish_footer", "") }}{%- endblock footer_js -%}
"""
_EMBED_SCRIPT = """
document.querySelectorAll("div.selfish-vega").forEach(function (el) {
  var spec = JSON.parse(document.getElementById(el.dataset.spec).textContent);
  vegaEmbed(el, spec, %s).catch(function (err) { console.error(err); });
});
"""
_WIDGET_NOTE = (
    '<p class="selfish-note">An interactive widget is here: open the notebook in '
    "JupyterLab with a running kernel to use it.</p>"
)


def _script_json(data: Any) -> str:
    """JSON safe inside <script>: no '<', '>' or '&' that HTML could read."""
    text = json.dumps(data, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def prepare_for_html(nb) -> tuple[Any, int]:
    """A copy of ``nb`` whose charts and widgets render without a kernel or network.

    Each Vega-Lite output becomes an HTML container holding its SVG (shown as
    is, and replaced by the interactive chart when the inlined Vega-Embed
    runs) and its spec; each widget output becomes a short note. Returns the
    copy and the number of charts.
    """
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    n_charts = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            spec = spec_of_output(data)
            if spec is not None:
                n_charts += 1
                spec_id = f"selfish-spec-{n_charts}"
                output["data"] = {
                    "text/html": (
                        f'<div class="selfish-vega" data-spec="{spec_id}">'
                        f"{data.get('image/svg+xml', '')}</div>"
                        f'<script type="application/json" id="{spec_id}">'
                        f"{_script_json(spec)}</script>"
                    )
                }
            elif "application/vnd.jupyter.widget-view+json" in data:
                output["data"] = {"text/html": _WIDGET_NOTE}
    return nb, n_charts


def notebook_to_html(nb, name: str) -> str:
    """Offline HTML of an executed notebook (lab template, no external scripts)."""
    # nbconvert (and its jinja2 templates) only to render: not needed to import this module.
    import jinja2
    from nbconvert import HTMLExporter

    nb, n_charts = prepare_for_html(nb)
    footer = ""
    if n_charts:
        bundle = javascript_bundle().replace("</script", "<\\/script")
        embed = _EMBED_SCRIPT % json.dumps({"renderer": "svg", **EMBED_OPTIONS})
        footer = f"<script>{bundle}</script>\n<script>{embed}</script>"
    exporter = HTMLExporter(
        template_name="lab",
        template_file=_TEMPLATE_NAME,
        extra_loaders=[jinja2.DictLoader({_TEMPLATE_NAME: _TEMPLATE})],
    )
    html, _ = exporter.from_notebook_node(
        nb, resources={"metadata": {"name": name}, "selfish_footer": footer}
    )
    return html


def export_html(ipynb: str | os.PathLike, html: str | os.PathLike | None = None) -> Path:
    """Render an executed ``.ipynb`` to its offline ``.html`` (written atomically)."""
    import nbformat  # only to render: not needed to import this module

    ipynb = Path(ipynb)
    target = Path(html) if html is not None else ipynb.with_suffix(".html")
    nb = nbformat.read(ipynb, as_version=4)
    return write_atomic(target, notebook_to_html(nb, ipynb.stem))


def render_reports(profile: str, reports_dir: str | os.PathLike = "reports") -> list[Path]:
    """Re-render the HTML of every executed notebook in ``reports/<profile>/`` (no execution)."""
    get_profile(profile)
    folder = Path(reports_dir) / profile
    executed = sorted(
        p
        for p in folder.glob("*.ipynb")
        if NOTEBOOK_PATTERN.match(p.stem) and not p.name.endswith(FAILED_SUFFIX)
    )
    if not executed:
        raise FileNotFoundError(
            f"no executed notebooks in {folder}: run `selfish reproduce --profile {profile}` first"
        )
    return [export_html(p) for p in executed]


# --- the pipeline --------------------------------------------------------------------------


_MISSING = object()  # what _read_json reads from a file that is not there


def _read_json(path: Path) -> tuple[Any, str | None]:
    """``(content, None)`` for a readable JSON file, ``(_MISSING, None)`` when there is
    none, ``(None, problem)`` when it cannot be read (``problem`` says why, in a few words)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return _MISSING, None
    except (OSError, UnicodeDecodeError) as exc:  # a folder, unreadable, not text
        return None, f"unreadable: {type(exc).__name__}"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"not JSON: {exc.msg} at line {exc.lineno}"
    except RecursionError:
        return None, "not JSON: nested too deeply"


def summary_problem(data: Any) -> str | None:
    """What makes ``data`` (a summary.json's content) unusable, or None: it must be an
    object whose ``notebooks`` (if any) maps notebook names to their entries (objects)."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    notebooks = data.get("notebooks", {})
    if not isinstance(notebooks, dict):
        return f"its notebooks are a JSON {type(notebooks).__name__}, not an object"
    for name, entry in notebooks.items():
        if not NOTEBOOK_PATTERN.match(name) or not isinstance(entry, dict):
            return f"its notebooks hold {name!r}, which is no notebook's entry"
    return None


def _set_aside(path: Path) -> Path:
    """Rename a damaged report file to ``<name>.<time>.damaged`` beside it (never deleted)."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.{stamp}{DAMAGED_SUFFIX}")
    n = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.{stamp}.{n}{DAMAGED_SUFFIX}")
        n += 1
    os.replace(path, aside)
    return aside


def _load_summary(path: Path) -> dict:
    """The summary.json at ``path`` ({} when there is none); a damaged one is set aside and
    rebuilt from the chapters' outputs in its folder (``rebuild_summary``)."""
    data, problem = _read_json(path)
    if data is _MISSING:
        return {}
    problem = problem or summary_problem(data)
    return data if problem is None else rebuild_summary(path.parent, problem)


def _executed_entry(ipynb: Path, report_dir: Path) -> dict:
    """A notebook's summary entry as its executed notebook records it (papermill's
    metadata: parameters, start, end, duration)."""
    name = ipynb.name.removesuffix(FAILED_SUFFIX).removesuffix(".ipynb")
    data, problem = _read_json(ipynb)
    meta = data.get("metadata", {}).get("papermill", {}) if isinstance(data, dict) else {}
    meta = meta if isinstance(meta, dict) else {}
    failed = ipynb.name.endswith(FAILED_SUFFIX)
    entry: dict[str, Any] = {"status": "failed" if failed else "ok", "rebuilt": True}
    for key, field in (("started", "start_time"), ("finished", "end_time")):
        with contextlib.suppress(TypeError, ValueError):
            stamp = dt.datetime.fromisoformat(meta[field]).astimezone()
            entry[key] = stamp.isoformat(timespec="seconds")
    if isinstance(meta.get("duration"), (int, float)):
        entry["seconds"] = round(float(meta["duration"]), 3)
    if isinstance(meta.get("parameters"), dict):  # the staging folder it ran in: not kept
        entry["parameters"] = {**meta["parameters"], "report_dir": str(report_dir)}
    if failed:
        entry["error"] = f"see {ipynb.name}" if problem is None else f"{ipynb.name}: {problem}"
    else:
        entry["ipynb"] = ipynb.name
        if (report_dir / f"{name}.html").exists():
            entry["html"] = f"{name}.html"
    return entry


def rebuild_summary(report_dir: str | os.PathLike, problem: str) -> dict:
    """Set ``report_dir``'s damaged summary.json aside and write it again from what the
    chapters left in the folder: an entry per executed notebook (``NN_name.ipynb``, or
    ``NN_name.failed.ipynb`` when its last run failed) and every fragment; one line on
    stderr says so. Returns the new summary (the reproduction then adds its own fields)."""
    report_dir = Path(report_dir)
    path = report_dir / SUMMARY
    aside = _set_aside(path) if path.exists() or path.is_symlink() else None
    entries: dict[str, dict] = {}
    for ipynb in sorted(report_dir.glob("*.ipynb")):
        stem = ipynb.name.removesuffix(FAILED_SUFFIX).removesuffix(".ipynb")
        if NOTEBOOK_PATTERN.match(stem) and (ipynb.name.endswith(FAILED_SUFFIX)
                                             or stem not in entries):  # fmt: skip
            entries[stem] = _executed_entry(ipynb, report_dir)
    summary = {
        "profile": report_dir.name,
        "rebuilt": {"at": _now(), "because": problem},
        "notebooks": entries,
        "fragments": read_fragments(report_dir),
    }
    write_json(path, summary)
    kept = f"kept as {aside.name}" if aside is not None else "nothing to keep"
    print(f"{path} was damaged ({problem}): {kept}; rebuilt from the folder's "
          f"{len(entries)} executed notebook(s) and {len(summary['fragments'])} "
          "fragment(s)", file=sys.stderr)  # fmt: skip
    return summary


def _writes_claims(ipynb: Path) -> bool:
    """Whether an executed notebook's code saves claims (so that claims.json held its rows)."""
    data, _ = _read_json(ipynb)
    cells = data.get("cells", []) if isinstance(data, dict) else []
    return any(
        isinstance(cell, dict) and cell.get("cell_type") == "code"
        and "save_claims(" in "".join(cell.get("source", ""))
        for cell in cells
    )  # fmt: skip


def rebuild_claims(report_dir: str | os.PathLike, problem: str) -> list[dict]:
    """Set ``report_dir``'s damaged claims.json aside and write it again from the chapters'
    own claims (``NN_name.claims.json``, merged by source in the order they were written,
    then corrected as a family); one line on stderr says so, and names the executed
    chapters that save claims but left no claims file of their own (their rows can only
    come back by running them again). Returns the rows written."""
    report_dir = Path(report_dir)
    path = report_dir / CLAIMS
    aside = _set_aside(path) if path.exists() or path.is_symlink() else None
    chapters = sorted(
        report_dir.glob(f"*{CLAIMS_SUFFIX}"), key=lambda p: (p.stat().st_mtime, p.name)
    )
    rows: list[dict] = []
    used, skipped = [], []
    for chapter in chapters:
        try:
            own = read_claims_file(chapter)
        except DamagedClaims as exc:
            skipped.append(f"{chapter.name} ({exc.problem})")
            continue
        sources = {row["source"] for row in own}
        rows = [row for row in rows if row["source"] not in sources] + own
        used.append(chapter.name.removesuffix(CLAIMS_SUFFIX))
    lost = [
        p.stem for p in sorted(report_dir.glob("*.ipynb"))
        if NOTEBOOK_PATTERN.match(p.stem) and p.stem not in used and _writes_claims(p)
    ]  # fmt: skip
    rows = family_correction(rows)
    write_atomic(path, json.dumps(rows, indent=2) + "\n")
    kept = f"kept as {aside.name}" if aside is not None else "nothing to keep"
    line = (f"{path} was damaged ({problem}): {kept}; rebuilt with {len(rows)} rows from the "
            f"claims of {', '.join(used) or 'no chapter'}")  # fmt: skip
    if skipped:
        line += f"; damaged too, left out: {', '.join(skipped)}"
    if lost:
        line += f"; run {', '.join(lost)} again for their rows (no claims file of their own)"
    print(line, file=sys.stderr)
    return rows


def check_report_files(report_dir: str | os.PathLike) -> None:
    """Before any work: a damaged summary.json, fragment or claims.json of ``report_dir`` is
    set aside and rebuilt from the chapters' outputs, and claims rows without a source are
    dropped, with a line each. The folder is only read when its files are sound; a repair
    waits for any other reproduction writing it (the reports lock)."""
    report_dir = Path(report_dir)
    if _report_files_sound(report_dir):
        return
    with _reports_lock(report_dir):
        _load_summary(report_dir / SUMMARY)  # rebuilt when damaged
        read_fragments(report_dir)  # a damaged one set aside
        claims_path = report_dir / CLAIMS
        try:
            rows = read_claims_file(claims_path)  # rows without a source dropped, a line
        except DamagedClaims as exc:
            rebuild_claims(report_dir, exc.problem)
            return
        stored, _ = _read_json(claims_path)
        if isinstance(stored, list) and len(rows) < len(stored):
            write_atomic(claims_path, json.dumps(family_correction(rows), indent=2) + "\n")


def _report_files_sound(report_dir: Path) -> bool:
    """Whether summary.json, the fragments and claims.json of ``report_dir`` read as they
    should (missing ones are sound), and every claims row has a source; writes nothing."""
    summary, problem = _read_json(report_dir / SUMMARY)
    if problem is not None or (summary is not _MISSING and summary_problem(summary) is not None):
        return False
    if any(_read_json(p)[1] is not None for p in report_dir.glob(f"*{FRAGMENT_SUFFIX}")):
        return False
    rows, problem = _read_json(report_dir / CLAIMS)
    if rows is _MISSING:
        return True
    if problem is not None or not isinstance(rows, list):
        return False
    return all(
        isinstance(row, dict) and isinstance(row.get("source"), str) and row["source"].strip()
        for row in rows
    )


def _merge_chapter_claims(report_dir: Path, chapter: Path) -> None:
    """Merge a chapter's claims file into claims.json (its sources' rows replaced); a
    damaged claims.json is rebuilt from every chapter's claims file instead."""
    target = report_dir / CLAIMS
    try:
        rows = merged_claims(target, read_claims_file(chapter))
    except DamagedClaims as exc:
        if exc.path != target:
            raise
        rebuild_claims(report_dir, exc.problem)
        return
    write_atomic(target, json.dumps(rows, indent=2) + "\n")


@dataclass
class Prepared:
    """A reproduction checked and planned, before anything is executed or written."""

    profile: str
    device: str
    seeds: list[int] | None
    store: Path
    corpus_path: Path
    report_dir: Path
    notebooks: list[tuple[Path, dict[str, Any]]]  # (source, injected parameters)
    grids: dict[str, dict[str, dict]]  # notebook -> part -> key -> TrainConfig
    checked: dict[str, Any] = dataclasses.field(default_factory=dict)  # notebook -> parameters

    def configs(self, include_pending: bool = False) -> list:
        """Every distinct run of the plan, in the order the notebooks read them; the
        runs of a ``PENDING`` part (not configured yet) only with ``include_pending``."""
        seen: dict[str, Any] = {}
        for grids in self.grids.values():
            for part, configs in grids.items():
                if part == PENDING and not include_pending:
                    continue
                for config in configs.values():
                    seen.setdefault(config_hash(config), config)
        return list(seen.values())

    @property
    def pending(self) -> bool:
        """Whether some notebook's runs wait for others (a ``PENDING`` part)."""
        return any(PENDING in grids for grids in self.grids.values())

    def declare_again(self) -> None:
        """Declare every notebook's runs again, from the store as it is now (after the
        runs that a pending part waited for were trained)."""
        self.grids = {name: declared_runs(name, params) for name, params in self.checked.items()}


def prepare(
    profile: str = "paper",
    device: str = "auto",
    seeds: Sequence[int] | None = None,
    only: Iterable[str] | None = None,
    reports_dir: str | os.PathLike = "reports",
    results_dir: str | os.PathLike = "results",
    data_path: str | os.PathLike | None = None,
    extra_parameters: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    notebooks_dir: str | os.PathLike | None = None,
) -> Prepared:
    """Validate a reproduction (every parameter, the notebooks' own with their own
    validators) and list the runs its notebooks read; nothing is executed or written."""
    get_profile(profile)
    check_device(device)
    seeds = None if seeds is None else list(check_seeds("seeds", seeds))
    store = results_root(results_dir)
    folder = Path(notebooks_dir) if notebooks_dir is not None else NOTEBOOKS_DIR
    paths = select_notebooks(only, folder)
    extra = dict(extra_parameters or {})
    for key, value in extra.items():
        if not isinstance(value, Mapping):
            allowed = "a mapping of parameter names to values for that notebook"
            raise ParameterError(f"extra_parameters[{key!r}]", value, allowed)
    unknown = sorted(set(extra) - {p.stem for p in paths})
    if unknown:
        chosen = ", ".join(p.stem for p in paths)
        raise ParameterError("extra_parameters", unknown[0], f"a notebook being run: {chosen}")
    corpus_path = resolve_corpus_path(data_path)
    report_dir = check_reports_dir(reports_dir, profile)
    common = {
        "profile": profile,
        "device": device,
        "seeds": seeds,
        "results_dir": str(store.resolve()),
        "data_path": str(corpus_path.resolve()),
        "progress": False,
        "report_dir": str(report_dir),
        "notebook_name": None,  # each notebook's own, set by notebook_parameters
    }
    notebooks, grids, checked_all = [], {}, {}
    for path in paths:
        nb = read_notebook(path)
        params = notebook_parameters(path.stem, parameter_names(nb), common, extra.get(path.stem))
        # The notebook's own validators, before its kernel starts: a typo costs nothing.
        checked = notebook_parameters_for_plan(
            parameters_source(nb), path.stem, {k: v for k, v in params.items() if k != "report_dir"}
        )
        notebooks.append((path, params))
        grids[path.stem] = declared_runs(path.stem, checked)
        checked_all[path.stem] = checked
    return Prepared(profile, device, seeds, store, corpus_path, report_dir, notebooks, grids,
                    checked_all)  # fmt: skip


def run_pipeline(
    profile: str = "paper",
    device: str = "auto",
    seeds: Sequence[int] | None = None,
    only: Iterable[str] | None = None,
    reports_dir: str | os.PathLike = "reports",
    results_dir: str | os.PathLike = "results",
    data_path: str | os.PathLike | None = None,
    extra_parameters: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    notebooks_dir: str | os.PathLike | None = None,
    progress: bool = True,
    jobs: int = 1,
    executor: str = "local",
    address: str | None = None,
    ensemble: int = 1,
    tasks_per_gpu: int = 1,
) -> list[Path]:
    """Train the runs the notebooks need, then execute the notebooks for ``profile`` and
    write the report; return the HTML paths.

    Args:
        profile: smoke, paper or large.
        device: auto, cpu, cuda or mps (checked to be available).
        seeds: seeds to run over; None = the profile's.
        only: notebook names (or 'NN' prefixes) to run; None = all.
        reports_dir: the report goes to ``<reports_dir>/<profile>/``.
        results_dir: the run store the notebooks share.
        data_path: the corpus file; None = $SELFISH_DATA, the cache or a download.
        extra_parameters: per-notebook overrides, e.g. ``{"01_hypothesis": {"layout": 1.0}}``;
            each must be a parameter of that notebook's own (not a common one).
        notebooks_dir: where the ``NN_name.py`` notebooks are (default: the repo's notebooks/).
        progress: show a progress bar over runs and notebooks, and papermill's over cells.
        jobs: worker processes that train the plan's runs at once (1: in this process);
            with ``executor="ray"`` and no ``address``, the CPUs of the local Ray cluster;
            also the notebooks executed at once once the runs are trained.
        executor: ``local`` (this machine: ``jobs`` processes) or ``ray`` (every run a
            Ray task; ``engine.distributed``); see ``engine.executors.train_all``.
        address: the Ray cluster, with ``executor="ray"``: ``auto``, ``HOST:PORT``;
            None: a local cluster started for the training.
        ensemble: train runs of one shape in groups of up to this many as one batched
            model (``engine.ensemble``; 1: every run alone, the default).
        tasks_per_gpu: with ``executor="ray"`` on CUDA, Ray tasks that share one GPU.

    Every parameter, the notebooks' own included, is validated with the notebooks' own
    validators before any kernel starts or anything is written. The runs the notebooks
    declare (``report.plan``) are trained first; the notebooks then only read the store.
    Each notebook runs into a staging folder and its files replace the previous
    report's only when it has succeeded, so a failing notebook leaves the last good
    report in place (and ``NN_name.failed.ipynb`` beside it). One reproduction at a
    time writes a reports folder: a second waits for the first (a lock), and
    ``summary.json`` is merged.
    """
    prepared = prepare(
        profile, device, seeds, only, reports_dir, results_dir, data_path, extra_parameters,
        notebooks_dir=notebooks_dir,
    )  # fmt: skip
    jobs = check_int("jobs", jobs, 1, max_jobs())
    ensemble = check_int("ensemble", ensemble, 1)
    tasks_per_gpu = check_int("tasks_per_gpu", tasks_per_gpu, 1, MAX_TASKS_PER_GPU)
    address = check_executor(executor, address, device)  # Ray installed? before any work
    # a damaged summary.json or claims.json is rebuilt now, not after hours of training
    check_report_files(prepared.report_dir)
    trained: set[str] = set()
    # A notebook whose runs wait for others (a pending part) is declared again once
    # those are trained; every round trains what is new, until nothing waits.
    while True:
        configs = [c for c in prepared.configs() if config_hash(c) not in trained]
        if configs:
            _train_round(prepared, configs, device, jobs, progress, executor, address, ensemble,
                         tasks_per_gpu)  # fmt: skip
            trained.update(config_hash(c) for c in configs)
        if not prepared.pending:
            break
        prepared.declare_again()
        if all(config_hash(c) in trained for c in prepared.configs()):
            if prepared.pending:  # trained, yet still waiting: a declaration that never resolves
                raise RuntimeError("some notebook's runs still wait for runs already trained")
            break
    report_dir = prepared.report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(notebooks_dir) if notebooks_dir is not None else NOTEBOOKS_DIR
    htmls = []
    with _reports_lock(report_dir):
        summary_path = report_dir / SUMMARY
        _update_summary(
            summary_path,
            profile=profile,
            device=device,
            device_resolved=str(resolve_device(device)),
            seeds=list(prepared.seeds)
            if prepared.seeds is not None
            else list(get_profile(profile).seeds),
            library_version=__version__,
            numerics_version=NUMERICS_VERSION,
            python=sys.version.split()[0],
            torch=torch.__version__,
            cuda=torch.version.cuda,
            started=_now(),
            finished=None,
        )
        htmls = _run_notebooks(prepared.notebooks, report_dir, folder, progress, jobs, profile)
        _update_summary(summary_path, finished=_now())
    return htmls


# What executing notebooks at once share: the report folder's files (the moves into it,
# summary.json and claims.json, read, merged and written back), one notebook at a time.
_PUBLISHING = threading.Lock()


def _run_notebooks(
    plan: Sequence[tuple[Path, dict]],
    report_dir: Path,
    folder: Path,
    progress: bool,
    jobs: int,
    profile: str,
) -> list[Path]:
    """Execute the notebooks of ``plan``, ``jobs`` at a time (they only read the run
    store: every run they need is trained before), and return their HTML paths in plan
    order. Each notebook executes into its own staging folder; what it publishes into
    the report folder is published one notebook at a time. When one fails, the
    notebooks not started yet are not started, those running finish, and the first
    failure in plan order is raised."""
    bar = tqdm(total=len(plan), desc=f"reproduce {profile}", unit="notebook",
               disable=not progress)  # fmt: skip
    if jobs <= 1 or len(plan) <= 1:
        htmls = []
        for path, params in plan:
            htmls.append(_run_one(path, params, report_dir, folder, progress))
            bar.update(1)
        bar.close()
        return htmls
    failed = threading.Event()

    def one(path: Path, params: dict) -> Path | None:
        if failed.is_set():  # a notebook failed: those not started yet are not started
            return None
        try:
            # one bar for all: the cell bars of notebooks executed at once would interleave
            return _run_one(path, params, report_dir, folder, False)
        except BaseException:
            failed.set()
            raise

    with futures.ThreadPoolExecutor(max_workers=min(jobs, len(plan))) as pool:
        running = [pool.submit(one, path, params) for path, params in plan]
        for _ in futures.as_completed(running):
            bar.update(1)
        bar.close()
    for job in running:  # the first failure in plan order
        if job.exception() is not None:
            raise job.exception()
    return [job.result() for job in running]


def _train_round(
    prepared: Prepared,
    configs: list,
    device: str,
    jobs: int,
    progress: bool,
    executor: str,
    address: str | None,
    ensemble: int,
    tasks_per_gpu: int = 1,
) -> None:
    """Train what is missing of ``configs``, after a line that says how much that is."""
    missing = [c for c in configs if run_status(c, prepared.store) != "done"]
    line = f"plan: {len(configs)} runs, {len(missing)} to train"
    corpus = None
    if missing:
        corpus = load_corpus(prepared.corpus_path)
        timings = calibrate(missing, corpus, device)
        seconds = sum(estimate_seconds(c, timings[shape_of(c)]) for c in missing)
        if address is not None:  # a Ray cluster's: its resources divide the time
            line += f" (about {format_duration(seconds)} on one worker, spread over Ray)"
        else:
            used = min(jobs, len(missing))  # no more workers run than runs to train
            where = f"{used} job(s)" if executor == "local" else f"{used} Ray CPU(s)"
            if used < jobs:
                where += f", one per run to train ({jobs} allowed)"
            line += f" (about {format_duration(seconds / used)} with {where})"
    waiting = " (more once tuning has chosen)" if prepared.pending else ""
    print(f"{line}, then {len(prepared.notebooks)} notebooks{waiting}", flush=True)
    train_all(
        configs, results_dir=prepared.store, data_path=prepared.corpus_path, corpus=corpus,
        device=device, jobs=jobs, progress=progress, executor=executor, address=address,
        ensemble=ensemble, tasks_per_gpu=tasks_per_gpu,
    )  # fmt: skip


def check_reports_dir(reports_dir: str | os.PathLike, profile: str) -> Path:
    """``<reports_dir>/<profile>``, resolved, checked to be a folder this process may write
    (created if missing) before any work."""
    allowed = "a folder for the reports (it is created if missing)"
    check_writable_folder("reports_dir", reports_dir, allowed)
    return check_writable_folder("reports_dir", Path(reports_dir) / profile, allowed).resolve()


@contextlib.contextmanager
def _reports_lock(report_dir: Path):
    """One reproduction at a time writes a reports folder: an advisory lock held while it
    runs, released by the system however the process ends."""
    lock = report_dir.parent / f".{report_dir.name}.lock"  # beside the folder, not in it
    head = f"waiting for another reproduction that is writing {report_dir}"
    kept = "its notebooks written so far stay; the next reproduction executes the rest"
    with exclusive_lock(lock, lambda holder: holder_message(head, holder, lock, kept)):
        yield


def _update_summary(path: Path, notebook: tuple[str, dict] | None = None, **fields) -> dict:
    """Merge ``fields`` (and one notebook's entry) into ``summary.json`` as it is on disk
    now, gather the fragments, and write it back atomically."""
    summary = _load_summary(path)
    summary.update(fields)
    summary.setdefault("notebooks", {})
    if notebook is not None:
        summary["notebooks"][notebook[0]] = notebook[1]
    summary["fragments"] = read_fragments(path.parent)
    write_json(path, summary)
    return summary


def _show_report_dir(ipynb: Path, staging: Path, report_dir: Path) -> None:
    """In the executed notebook's injected-parameters cell, show the report folder the
    files end up in rather than the staging folder they were written to."""
    import nbformat  # only to render: not needed to import this module

    nb = nbformat.read(ipynb, as_version=4)
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.source = cell.source.replace(json.dumps(str(staging)), json.dumps(str(report_dir)))
    write_atomic(ipynb, nbformat.writes(nb))


def _run_one(path: Path, params: dict, report_dir: Path, cwd: Path, progress: bool) -> Path:
    """Execute one notebook into a staging folder and, once it has succeeded, move its
    files (notebook, HTML, fragment, figures, claims) over the previous report's."""
    name = path.stem
    staging = report_dir / f".{name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    entry = {"status": "running", "started": _now(), "parameters": params}
    began = time.perf_counter()
    summary_path = report_dir / SUMMARY
    try:
        staged = execute_notebook(
            path, staging / f"{name}.ipynb", {**params, "report_dir": str(staging)},
            cwd=cwd, progress=progress,
        )  # fmt: skip
        _show_report_dir(staged, staging, report_dir)
        export_html(staged, staging / f"{name}.html")
    except BaseException as exc:
        failed = staging / f"{name}{FAILED_SUFFIX}"
        if failed.exists():
            os.replace(failed, report_dir / failed.name)
        shutil.rmtree(staging, ignore_errors=True)
        first_line = (str(exc).strip().splitlines() or [""])[0][:500]
        entry.update(status="failed", error=f"{type(exc).__name__}: {first_line}")
        entry.update(finished=_now(), seconds=round(time.perf_counter() - began, 3))
        with _PUBLISHING:
            _update_summary(summary_path, (name, entry))
        if isinstance(exc, NotebookError) and exc.kept is not None:
            kept = report_dir / failed.name  # where the partial notebook now lies
            raise NotebookError(
                exc.notebook, exc.cell_index, exc.execution_count, exc.first_line,
                exc.ename, exc.evalue, kept,
            ) from None  # fmt: skip
        raise
    with _PUBLISHING:
        staged_claims = staging / CLAIMS  # this chapter's rows only: the staging folder was empty
        for source in sorted(p for p in staging.rglob("*") if p.is_file() and p != staged_claims):
            target = report_dir / source.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
        if staged_claims.exists():  # kept as the chapter's own, then merged by source
            chapter_claims = report_dir / f"{name}{CLAIMS_SUFFIX}"
            os.replace(staged_claims, chapter_claims)
            _merge_chapter_claims(report_dir, chapter_claims)
        shutil.rmtree(staging, ignore_errors=True)
        (report_dir / f"{name}{FAILED_SUFFIX}").unlink(missing_ok=True)
        html = report_dir / f"{name}.html"
        entry.update(status="ok", finished=_now(), ipynb=f"{name}.ipynb", html=html.name)
        entry["seconds"] = round(time.perf_counter() - began, 3)
        _update_summary(summary_path, (name, entry))
    return html
