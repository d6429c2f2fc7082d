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

Parameters are injected into the cell tagged ``parameters``, and only those
the cell defines: ``profile``, ``device``, ``seeds``, ``results_dir``,
``data_path``, ``progress`` (False: progress bars inside a headless kernel are
invisible) and ``report_dir`` (the absolute ``reports/<profile>``).

Fragments: a notebook contributes numbers to ``summary.json`` by calling
``write_fragment(report_dir, "NN_name", {...})``, which writes
``<report_dir>/NN_name.summary.json`` (and does nothing when ``report_dir`` is
None, i.e. when the notebook runs interactively). After each notebook the
pipeline gathers every fragment of the folder under ``summary["fragments"]``.

Everything is written under a temporary name and renamed: a failing notebook
leaves ``NN_name.failed.ipynb`` for inspection and no ``NN_name.ipynb`` or
``.html``. This module imports papermill, nbconvert and jupytext only when it
executes or renders, so notebooks can import it cheaply for ``write_fragment``.
"""

from __future__ import annotations

import ast
import copy
import datetime as dt
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..engine.files import write_atomic, write_json
from ..engine.validation import ParameterError, check_choice, check_seeds

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
DEVICES = ("auto", "cpu", "cuda", "mps")
KERNEL = "python3"
SUMMARY = "summary.json"
FRAGMENT_SUFFIX = ".summary.json"
FAILED_SUFFIX = ".failed.ipynb"
NOTEBOOK_PATTERN = re.compile(r"^\d\d_\w+$")
COMMON_PARAMETERS = (
    "profile",
    "device",
    "seeds",
    "results_dir",
    "data_path",
    "progress",
    "report_dir",
)


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
    """Every fragment in ``report_dir``, keyed by notebook name."""
    out = {}
    for path in sorted(Path(report_dir).glob(f"*{FRAGMENT_SUFFIX}")):
        out[path.name[: -len(FRAGMENT_SUFFIX)]] = json.loads(path.read_text())
    return out


# --- validation -------------------------------------------------------------------------


def check_device(device: str) -> str:
    """Validate ``device`` (auto, cpu, cuda, mps, optionally 'cuda:N') and its availability."""
    from ..engine.training import resolve_device

    kind = str(device).split(":")[0] if isinstance(device, str) else device
    check_choice("device", kind, DEVICES)
    try:
        resolve_device(device)
    except ValueError as exc:  # valid name, but not on this machine
        reason = str(exc).split(": ", 1)[-1]  # drop resolve_device's own "invalid device=..."
        raise ParameterError("device", device, f"a device available here ({reason})") from None
    return device


def check_study(profile: str, seeds, device: str):
    """Validate the parameters every notebook shares and return the profile (with the
    ``seeds`` if given), so that a typo fails before any work with a clear message."""
    from ..engine.profiles import get_profile

    study = get_profile(profile, seeds)
    check_device(device)
    return study


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
    import jupytext

    return jupytext.read(Path(path))


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

    Common values are passed only when the notebook defines them; every
    override must be one of ``names`` (a typo raises ParameterError).
    """
    params = {k: v for k, v in common.items() if k in names}
    for key, value in (overrides or {}).items():
        if key not in names:
            allowed = "a parameter of " + name + ": " + (", ".join(names) or "(it defines none)")
            raise ParameterError(f"extra_parameters[{name!r}]", key, allowed)
        params[key] = value
    return params


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
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source, output = Path(source), Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    running = output.with_name(f".{output.stem}.running.ipynb")
    failed = output.with_name(output.stem + FAILED_SUFFIX)
    bar = {"desc": output.stem, "leave": False, "position": 1} if progress else False
    try:
        papermill.execute_notebook(
            read_notebook(source),
            str(running),
            parameters=dict(parameters),
            kernel_name=KERNEL,
            language="python",
            cwd=str(cwd),
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
    from .charts import spec_of_output

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
    import jinja2
    from nbconvert import HTMLExporter

    from .charts import EMBED_OPTIONS, javascript_bundle

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
    import nbformat

    ipynb = Path(ipynb)
    target = Path(html) if html is not None else ipynb.with_suffix(".html")
    nb = nbformat.read(ipynb, as_version=4)
    return write_atomic(target, notebook_to_html(nb, ipynb.stem))


def render_reports(profile: str, reports_dir: str | os.PathLike = "reports") -> list[Path]:
    """Re-render the HTML of every executed notebook in ``reports/<profile>/`` (no execution)."""
    from ..engine.profiles import get_profile

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


def _load_summary(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


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
) -> list[Path]:
    """Execute the notebooks for ``profile`` and write the report; return the HTML paths.

    Args:
        profile: smoke, paper or large.
        device: auto, cpu, cuda or mps (checked to be available).
        seeds: seeds to run over; None = the profile's.
        only: notebook names (or 'NN' prefixes) to run; None = all.
        reports_dir: the report goes to ``<reports_dir>/<profile>/``.
        results_dir: the run store the notebooks share.
        data_path: the corpus file; None = $SELFISH_DATA, the cache or a download.
        extra_parameters: per-notebook overrides, e.g. ``{"01_hypothesis": {"layout": 1.0}}``;
            each must be a parameter that notebook defines.
        notebooks_dir: where the ``NN_name.py`` notebooks are (default: the repo's notebooks/).
        progress: show a progress bar over notebooks and papermill's over cells.

    Every parameter is validated before anything is executed or written; a
    failing notebook stops the pipeline with NotebookError.
    """
    from tqdm.auto import tqdm

    from ..engine.corpus import resolve_corpus_path
    from ..engine.profiles import get_profile
    from ..engine.training import resolve_device

    spec = get_profile(profile)
    check_device(device)
    seeds = None if seeds is None else list(check_seeds("seeds", seeds))
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
    report_dir = (Path(reports_dir) / profile).resolve()
    common = {
        "profile": profile,
        "device": device,
        "seeds": seeds,
        "results_dir": str(Path(results_dir).resolve()),
        "data_path": str(corpus_path.resolve()),
        "progress": False,
        "report_dir": str(report_dir),
    }
    plan = []
    for path in paths:
        names = parameter_names(read_notebook(path))
        plan.append((path, notebook_parameters(path.stem, names, common, extra.get(path.stem))))

    report_dir.mkdir(parents=True, exist_ok=True)
    summary_path = report_dir / SUMMARY
    summary = _load_summary(summary_path)
    summary.update(
        profile=profile,
        device=device,
        device_resolved=str(resolve_device(device)),
        seeds=list(seeds) if seeds is not None else list(spec.seeds),
        library_version=__version__,
        python=sys.version.split()[0],
        started=_now(),
        finished=None,
    )
    summary.setdefault("notebooks", {})
    htmls = []
    bar = tqdm(plan, desc=f"reproduce {profile}", unit="notebook", disable=not progress)
    for path, params in bar:
        name = path.stem
        ipynb, html = report_dir / f"{name}.ipynb", report_dir / f"{name}.html"
        # Stale outputs of an earlier run must not pass for this run's.
        for stale in (ipynb, html, report_dir / f"{name}{FRAGMENT_SUFFIX}"):
            stale.unlink(missing_ok=True)
        entry = {"status": "running", "started": _now(), "parameters": params}
        summary["notebooks"][name] = entry
        began = time.perf_counter()
        try:
            execute_notebook(path, ipynb, params, cwd=folder, progress=progress)
            export_html(ipynb, html)
        except Exception as exc:
            first_line = (str(exc).strip().splitlines() or [""])[0][:500]
            entry.update(status="failed", error=f"{type(exc).__name__}: {first_line}")
            entry["finished"] = _now()
            entry["seconds"] = round(time.perf_counter() - began, 3)
            summary["fragments"] = read_fragments(report_dir)
            write_json(summary_path, summary)
            raise
        entry.update(status="ok", finished=_now(), ipynb=ipynb.name, html=html.name)
        entry["seconds"] = round(time.perf_counter() - began, 3)
        summary["fragments"] = read_fragments(report_dir)
        write_json(summary_path, summary)
        htmls.append(html)
    summary["finished"] = _now()
    write_json(summary_path, summary)
    return htmls
