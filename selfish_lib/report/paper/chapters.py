"""One executed notebook as a chapter of the paper: prose first, code folded, every chart and
table a numbered figure or table with its provenance, no path of the machine that built it.

A chapter is read from ``reports/<profile>/NN_name.ipynb`` as papermill left it:

- Markdown cells become the chapter's prose (headings one level down, so the notebook's
  title is the chapter's; "notebook 03" and "chapter 03" link to that chapter; author-year
  mentions of a bibliography entry link to it);
- each code cell's source is folded in a ``<details>`` element a reader can open; the
  cell papermill injected shows the parameters a reader can pass again
  (``portable_parameters``), never the build machine's paths;
- each chart (a Vega-Lite output) becomes a ``<figure>`` with its static SVG, its spec for
  the inlined Vega-Embed, a caption from the chart's title and the section it is in, and a
  provenance line (notebook, cell, profile, seeds, runs, numerics version, commit);
- each HTML table becomes a numbered table the same way, except the list of runs a
  chapter reads (``describe_runs``: the columns ``id`` and ``train_seconds``), which is
  folded and gives the chapter's run ids, seeds and training times.

Numbers are placeholders until the whole paper is assembled: ``number_items`` numbers the
figures and tables in the order they appear and fills in every cross-reference.
"""

from __future__ import annotations

import ast
import html
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

from ..charts import spec_of_output
from .references import replace_outside_tags

KINDS = {"fig": "Figure", "tbl": "Table"}
# The parameters the pipeline injects for its own use: not shown as parameters to pass.
INTERNAL_PARAMETERS = ("report_dir", "progress", "notebook_name")
# Parameters whose injected value is a path of the build machine: shown as the value a
# reader would pass (the command's default), with a note.
PORTABLE_VALUES = {
    "results_dir": ('"results"', "the run store (selfish reproduce --results-dir)"),
    "data_path": ("None", "the corpus: $SELFISH_DATA, else the user cache"),
}
RUN_TABLE_COLUMNS = frozenset({"id", "seed", "train_seconds"})
SHORT_ID = 8
WIDGET_NOTE = (
    '<p class="note">An interactive widget is here in the notebook: open it in JupyterLab '
    "with a running kernel to use it.</p>"
)
_HEADING = re.compile(
    r'<h([1-6]) id="[^"]*">(.*?)<a class="anchor-link" href="#[^"]*">(?:¶|&#182;)</a></h\1>'
)
_CHAPTER_MENTION = re.compile(
    r"\b((?:notebook|chapter)s?)((?:(?:\s*,\s*|\s+and\s+|\s+to\s+|\s+)\d\d\b)+)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class RunRow:
    """One run a chapter read, as its run table lists it."""

    id: str
    seed: int | None
    train_seconds: float | None
    setting: str = ""
    objective: str = ""


@dataclass
class Chapter:
    """One executed notebook, assembled."""

    name: str  # NN_name
    title: str  # the notebook's own title (its first heading)
    html: str = ""
    figures: list[str] = field(default_factory=list)  # anchors, in order
    tables: list[str] = field(default_factory=list)
    runs: list[RunRow] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def number(self) -> str:
        """The chapter's two digits ('03')."""
        return self.name[:2]

    @property
    def anchor(self) -> str:
        """The id of the chapter's section."""
        return chapter_anchor(self.name)

    @property
    def run_ids(self) -> list[str]:
        """The distinct run ids the chapter read, in the order it listed them."""
        return list(dict.fromkeys(run.id for run in self.runs))

    @property
    def seeds(self) -> list[int]:
        """The distinct seeds of the runs the chapter read, sorted."""
        return sorted({run.seed for run in self.runs if run.seed is not None})


@dataclass(frozen=True)
class Context:
    """What every chapter's provenance and links need from the paper being built."""

    profile: str
    profile_seeds: Sequence[int]
    numerics_version: int
    commit: str
    chapters: Sequence[str]  # the names of the chapters in the paper
    render_markdown: Callable[[str], str]  # Markdown -> HTML, citations and mentions linked


def chapter_anchor(name: str) -> str:
    """The id of a chapter's section: ``ch-03`` for ``03_hns_training``."""
    return f"ch-{name[:2]}"


def short_id(run_id: str) -> str:
    """A run id shortened for a provenance line (the manifest keeps them whole)."""
    return run_id[:SHORT_ID]


# --- parameters and paths -----------------------------------------------------------------


def portable_parameters(source: str) -> str:
    """The injected-parameters cell ``source`` as a reader can use it: each path of the build
    machine (``PORTABLE_VALUES``) replaced by the value a reader would pass, with a comment,
    and the pipeline's own parameters (``INTERNAL_PARAMETERS``) left out."""
    out, dropped = [], []
    for line in source.splitlines():
        name = line.split("=", 1)[0].strip() if "=" in line else None
        if name in INTERNAL_PARAMETERS:
            dropped.append(name)
        elif name in PORTABLE_VALUES:
            value, note = PORTABLE_VALUES[name]
            out.append(f"{name} = {value}  # {note}")
        else:
            out.append(line)
    if dropped:
        out.append(f"# {', '.join(dropped)}: set by `selfish reproduce` itself")
    return "\n".join(out)


def injected_parameters(source: str) -> dict[str, Any]:
    """The values of a papermill injected-parameters cell (``name = literal`` lines)."""
    values = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                try:
                    values[target.id] = ast.literal_eval(node.value)
                except ValueError:
                    values[target.id] = ast.unparse(node.value)
    return values


def scrub_paths(text: str, paths: Mapping[str, str]) -> str:
    """``text`` with every occurrence of each machine path of ``paths`` (path ->
    placeholder) replaced by its placeholder, as written, JSON-escaped or HTML-escaped;
    longer paths first, so a folder inside another is named by its own placeholder. A
    path is only replaced whole (not '/root' in '/rooted')."""
    for path in sorted((p for p in paths if _usable(p)), key=len, reverse=True):
        for variant in {path, json.dumps(path)[1:-1], html.escape(path)}:
            text = re.sub(rf"(?<![\w.]){re.escape(variant)}(?![\w])", paths[path], text)
    return text


def paths_left(text: str, paths: Mapping[str, str]) -> list[str]:
    """The paths of ``paths`` (path -> placeholder) that ``text`` still holds (after
    ``scrub_paths``: none)."""
    return [
        p for p in paths if _usable(p) and re.search(rf"(?<![\w.]){re.escape(p)}(?![\w])", text)
    ]


def _usable(path: str) -> bool:
    """A path worth scrubbing: absolute and more than the root folder."""
    return bool(path) and path.startswith("/") and path.rstrip("/") != ""


# --- tables in HTML output ----------------------------------------------------------------


class _TableReader(HTMLParser):
    """The header and body cells of the first table of an HTML fragment."""

    def __init__(self) -> None:
        super().__init__()
        self.header: list[str] = []
        self.rows: list[list[str]] = []
        self.caption = ""
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._in_head = False
        self._in_caption = False
        self._tables = 0

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._tables += 1
        if self._tables != 1:
            return
        if tag == "thead":
            self._in_head = True
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "caption":
            self._in_caption = True

    def handle_endtag(self, tag):
        if self._tables != 1:
            return
        if tag == "thead":
            self._in_head = False
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._in_head:
                self.header = self._row
            else:
                self.rows.append(self._row)
            self._row = None
        elif tag == "caption":
            self._in_caption = False

    def handle_data(self, data):
        if self._in_caption:
            self.caption += data
        elif self._cell is not None:
            self._cell.append(data)


def read_table(fragment: str) -> tuple[list[str], list[dict[str, str]], str]:
    """The first table of an HTML fragment: its header names, its rows (name -> cell) and
    its caption. pandas' unnamed index column (an empty header cell) is left out."""
    reader = _TableReader()
    reader.feed(fragment)
    rows = [
        {name: cell for name, cell in zip(reader.header, cells, strict=False) if name}
        for cells in reader.rows
    ]
    return [name for name in reader.header if name], rows, reader.caption.strip()


def run_rows(fragment: str) -> list[RunRow] | None:
    """The runs of a run table (``engine.runs.describe_runs`` as HTML), or None when the
    fragment is not one."""
    if "<table" not in fragment:
        return None
    header, rows, _ = read_table(fragment)
    if not set(header) >= RUN_TABLE_COLUMNS:
        return None
    out = []
    for row in rows:
        out.append(
            RunRow(
                id=row["id"],
                seed=_int_or_none(row.get("seed")),
                train_seconds=_float_or_none(row.get("train_seconds")),
                setting=row.get("setting", ""),
                objective=row.get("objective", ""),
            )
        )
    return out


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(str(text))
    except (TypeError, ValueError):
        return None


def _float_or_none(text: str | None) -> float | None:
    try:
        return float(str(text))
    except (TypeError, ValueError):
        return None


# --- one chapter ----------------------------------------------------------------------------


def link_chapters(rendered: str, chapters: Sequence[str]) -> str:
    """Rendered prose with each chapter number after 'notebook(s)' or 'chapter(s)' ('notebook
    03', 'chapters 02 and 05') a link to that chapter, when the paper has it."""
    present = {name[:2] for name in chapters}

    def number(match: re.Match) -> str:
        if match.group(0) not in present:
            return match.group(0)
        return f'<a class="xref-chapter" href="#ch-{match.group(0)}">{match.group(0)}</a>'

    def one(match: re.Match) -> str:
        return match.group(1) + re.sub(r"\d\d", number, match.group(2))

    return replace_outside_tags(_CHAPTER_MENTION, one, rendered)


def own_headings(rendered: str, prefix: str, shift: int = 0) -> str:
    """Headings of rendered Markdown as the paper writes them: ``shift`` levels down, each
    with the id ``<prefix>-<slug>`` and without the renderer's own anchor link."""

    def one(match: re.Match) -> str:
        level, text = min(int(match.group(1)) + shift, 6), match.group(2)
        return f'<h{level} id="{prefix}-{slug(text)}">{text}</h{level}>'

    return _HEADING.sub(one, rendered)


def slug(text: str) -> str:
    """A fragment id of the words of ``text``: 'What the numbers say' -> 'what-the-numbers-say'."""
    words = re.findall(r"[a-z0-9]+", html.unescape(re.sub(r"<[^>]+>", "", text)).lower())
    return "-".join(words)[:60] or "section"


def _title_of(spec: Mapping[str, Any]) -> str:
    """A chart's title text (and subtitle), or '' when it has none at the top."""
    title = spec.get("title")
    if isinstance(title, Mapping):
        text, subtitle = title.get("text", ""), title.get("subtitle", "")
    else:
        text, subtitle = title or "", ""
    text = " ".join(text) if isinstance(text, list) else str(text)
    subtitle = " ".join(subtitle) if isinstance(subtitle, list) else str(subtitle)
    return f"{text}: {subtitle}" if text and subtitle else text or subtitle


def _script_json(data: Any) -> str:
    """JSON safe inside <script>: no '<', '>' or '&' that HTML could read."""
    text = json.dumps(data, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


_CODE_FORMATTER = HtmlFormatter(cssclass="highlight", nowrap=False)


def code_css() -> str:
    """The CSS of the folded code's syntax colours."""
    return _CODE_FORMATTER.get_style_defs(".highlight")


def _code(source: str) -> str:
    return highlight(source, PythonLexer(), _CODE_FORMATTER)


class ChapterBuilder:
    """Assembles one executed notebook (an nbformat node) into a ``Chapter``."""

    def __init__(self, name: str, nb, context: Context) -> None:
        self.name, self.nb, self.context = name, nb, context
        self.chapter = Chapter(name=name, title=name)
        self.section = ""  # the heading the cells now are under
        self.parts: list[str] = []
        self.n_items = 0

    def build(self) -> Chapter:
        """The chapter: its HTML section, figures, tables, runs and parameters."""
        cells = list(self.nb.cells)
        for index, cell in enumerate(cells, 1):
            tags = cell.metadata.get("tags", [])
            if cell.cell_type == "markdown":
                self._markdown(cell.source)
            elif cell.cell_type == "code" and "injected-parameters" in tags:
                self.chapter.parameters = injected_parameters(cell.source)
                self.parts.append(
                    '<details class="parameters" open><summary>Parameters of this execution'
                    f"</summary>{_code(portable_parameters(cell.source))}</details>"
                )
            elif cell.cell_type == "code":
                self._code_cell(cell, index, "parameters" in tags)
        body = "\n".join(self.parts)
        self.chapter.html = (
            f'<section class="chapter" id="{self.chapter.anchor}">\n'
            f"{self._heading()}\n{self._lead()}\n{body}\n</section>"
        )
        return self.chapter

    # the heading and the lead come last: they name what the cells gave
    def _heading(self) -> str:
        return f'<h2 class="chapter-title">{self.chapter.title}</h2>'

    def _lead(self) -> str:
        c, ctx = self.chapter, self.context
        seeds = ", ".join(str(s) for s in (c.seeds or ctx.profile_seeds))
        parts = [
            f"From notebook <code>{c.name}</code>, executed for the {ctx.profile} profile "
            f"(seeds {seeds})"
        ]
        if c.runs:
            parts.append(f"reading {len(c.run_ids)} runs (listed in its folded run tables)")
        items = [*c.figures, *c.tables]
        if items:
            parts.append(
                "shown in " + ", ".join(f'<a class="xref" href="#{a}"></a>' for a in items)
            )
        lead = "; ".join(parts) + "."
        return f'<p class="chapter-lead">{lead}</p>'

    def _markdown(self, source: str) -> None:
        rendered = self.context.render_markdown(source)
        rendered = self._headings(rendered)
        self.parts.append(f'<div class="prose">{self._link_chapters(rendered)}</div>')

    def _headings(self, rendered: str) -> str:
        """Headings one level down, ids unique in the paper; the first top-level heading is
        the chapter's title (taken out of the prose)."""

        def one(match: re.Match) -> str:
            level, text = int(match.group(1)), match.group(2)
            if level == 1 and self.chapter.title == self.name:
                self.chapter.title = text
                return ""
            self.section = re.sub(r"<[^>]+>", "", text)
            anchor = f"{self.chapter.anchor}-{slug(text)}"
            return f'<h{min(level + 1, 6)} id="{anchor}">{text}</h{min(level + 1, 6)}>'

        return _HEADING.sub(one, rendered)

    def _link_chapters(self, rendered: str) -> str:
        return link_chapters(rendered, self.context.chapters)

    def _code_cell(self, cell, index: int, is_parameters: bool) -> None:
        label = "Default parameters" if is_parameters else "Code"
        count = cell.get("execution_count")
        where = f"cell {index}" + (f", In [{count}]" if count else "")
        self.parts.append(
            f'<details class="code"><summary>{label} ({where})</summary>'
            f"{_code(cell.source)}</details>"
        )
        for output in cell.get("outputs", []):
            self.parts.append(self._output(output, index, count))

    def _provenance(self, index: int, count: int | None) -> str:
        c, ctx = self.chapter, self.context
        cell = f"cell {index}" + (f" (In [{count}])" if count else "")
        seeds = c.seeds or list(ctx.profile_seeds)
        items = [
            f"notebook <code>{c.name}</code>, {cell}",
            f"profile {ctx.profile}",
            "seeds " + ", ".join(str(s) for s in seeds),
        ]
        ids = c.run_ids
        if ids:
            shown = ", ".join(f"<code>{short_id(i)}</code>" for i in ids[:4])
            more = f" and {len(ids) - 4} more" if len(ids) > 4 else ""
            items.append(f'runs {shown}{more} (<a class="xref" href="#appendix-runs"></a>)')
        items += [f"numerics version {ctx.numerics_version}", f"commit <code>{ctx.commit}</code>"]
        return '<p class="provenance">Source: ' + " · ".join(items) + "</p>"

    def _output(self, output, index: int, count: int | None) -> str:
        kind = output.get("output_type")
        if kind == "stream":
            text = html.escape(_joined(output.get("text", "")))
            return f'<pre class="stream {output.get("name", "")}">{text}</pre>'
        if kind == "error":
            text = f"{output.get('ename', '')}: {output.get('evalue', '')}"
            return f'<pre class="stream error">{html.escape(text)}</pre>'
        data = output.get("data", {})
        spec = spec_of_output(data)
        if spec is not None:
            return self._figure(
                self._chart(spec, data.get("image/svg+xml", "")), _title_of(spec), index, count
            )
        if "application/vnd.jupyter.widget-view+json" in data:
            return WIDGET_NOTE
        if "text/html" in data:
            fragment = _joined(data["text/html"])
            runs = run_rows(fragment)
            if runs is not None:
                self.chapter.runs.extend(runs)
                return (
                    f'<details class="runs"><summary>Runs read here ({len(runs)})</summary>'
                    f'<div class="table-wrap">{fragment}</div></details>'
                )
            if "<table" in fragment:
                _, _, caption = read_table(fragment)
                return self._table(fragment, caption, index, count)
            return f'<div class="output">{fragment}</div>'
        if "text/markdown" in data:
            rendered = self._headings(self.context.render_markdown(_joined(data["text/markdown"])))
            return f'<div class="output computed">{self._link_chapters(rendered)}</div>'
        if "image/svg+xml" in data:
            return self._figure(_joined(data["image/svg+xml"]), "", index, count)
        if "image/png" in data:
            image = f'<img alt="" src="data:image/png;base64,{_joined(data["image/png"]).strip()}">'
            return self._figure(image, "", index, count)
        if "text/plain" in data:
            return f'<pre class="output">{html.escape(_joined(data["text/plain"]))}</pre>'
        return ""

    def _anchor(self, kind: str, index: int) -> str:
        self.n_items += 1
        return f"{kind}-{self.chapter.number}-{index}-{self.n_items}"

    def _chart(self, spec: Mapping[str, Any], svg: Any) -> str:
        spec_id = f"spec-{self.chapter.number}-{self.n_items + 1}"
        return (
            f'<div class="selfish-vega" data-spec="{spec_id}">{_joined(svg)}</div>'
            f'<script type="application/json" id="{spec_id}">{_script_json(spec)}</script>'
        )

    def _figure(self, content: str, title: str, index: int, count: int | None) -> str:
        anchor = self._anchor("fig", index)
        self.chapter.figures.append(anchor)
        caption = _caption(self.section, title)
        return (
            f'<figure class="numbered figure" id="{anchor}" data-kind="Figure">{content}'
            f'<figcaption><span class="number" data-label="{anchor}"></span> '
            f"{html.escape(caption)}</figcaption>{self._provenance(index, count)}</figure>"
        )

    def _table(self, fragment: str, caption: str, index: int, count: int | None) -> str:
        anchor = self._anchor("tbl", index)
        self.chapter.tables.append(anchor)
        text = _caption(self.section, caption)
        return (
            f'<figure class="numbered table" id="{anchor}" data-kind="Table">'
            f'<figcaption><span class="number" data-label="{anchor}"></span> '
            f'{html.escape(text)}</figcaption><div class="table-wrap">{fragment}</div>'
            f"{self._provenance(index, count)}</figure>"
        )


def _caption(section: str, title: str) -> str:
    """'<section>: <title>', or '<section> <title>' after a section that ends a sentence
    ('How rare are the rare symbols? Symbol counts ...'); either alone when the other is
    missing or holds it."""
    section, title = section.strip(), title.strip()
    if not title or title in section:
        return section or "Output"
    if not section or section in title:
        return title
    return f"{section} {title}" if section[-1] in "?!." else f"{section}: {title}"


def _joined(value: Any) -> str:
    """A notebook output value as text (nbformat may store a list of lines)."""
    return "".join(value) if isinstance(value, list) else str(value)


def build_chapter(path: Path, context: Context) -> Chapter:
    """The chapter of the executed notebook at ``path`` (``NN_name.ipynb``)."""
    import nbformat  # only to read notebooks: deferred like everywhere in report

    nb = nbformat.read(path, as_version=4)
    return ChapterBuilder(path.stem, nb, context).build()


# --- numbering ------------------------------------------------------------------------------

_NUMBERED = re.compile(r'<figure class="numbered [^"]*" id="([^"]+)" data-kind="(\w+)"')
_LABEL = re.compile(r'<span class="number" data-label="([^"]+)"></span>')
_XREF = re.compile(r'<a class="xref" href="#([^"]+)"></a>')


class UnresolvedReference(ValueError):
    """A cross-reference to a figure, table or section the paper does not have."""


def number_items(
    page: str, sections: Mapping[str, str] | None = None
) -> tuple[str, dict[str, str]]:
    """Number the figures and tables of ``page`` in the order they appear (Figure 1, 2, ...;
    Table 1, 2, ...), write each number into its caption and into every empty
    cross-reference to it; a cross-reference to a section uses its name from ``sections``
    (anchor -> text). Returns the page and the numbers given (anchor -> 'Figure 3').
    A cross-reference to nothing raises UnresolvedReference naming it."""
    counters: dict[str, int] = {}
    numbers: dict[str, str] = {}
    for match in _NUMBERED.finditer(page):
        anchor, kind = match.groups()
        counters[kind] = counters.get(kind, 0) + 1
        numbers[anchor] = f"{kind} {counters[kind]}"
    page = _LABEL.sub(lambda m: f'<span class="number">{numbers[m.group(1)]}.</span>', page)
    known = {**(sections or {}), **numbers}

    def xref(match: re.Match) -> str:
        anchor = match.group(1)
        if anchor not in known:
            raise UnresolvedReference(
                f"a cross-reference to #{anchor}: the paper has no such figure, table or section"
            )
        return f'<a class="xref" href="#{anchor}">{html.escape(known[anchor])}</a>'

    return _XREF.sub(xref, page), numbers
