"""The paper (``report.paper``): one document from the executed chapters.

Fast checks first, on made-up inputs: the parameters shown without the build machine's
paths, path scrubbing, the numbering of figures and tables and their cross-references,
the claims table and the sentences the verdicts choose, the bibliography, a chapter built
from a small executed notebook, the published paper's checks and the command line.

Then the paper built from the session's smoke reproduction (tests/conftest.py runs it once
for every test that needs it): paper.html holds every chapter and figure and no path of
the machine; the PDF printed from it holds every figure's caption (slow: printing and
reading it back take a minute or more); and, in Debian's Chromium with
the network cut (marked ``browser``), every chart is drawn, the figures are numbered in
order, every cross-reference and citation resolves and nothing is logged as an error.
"""

from __future__ import annotations

import html
import importlib.util
import json
import math
import os
import re
import shutil
import threading
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from selfish_lib.engine.runs import NUMERICS_VERSION
from selfish_lib.engine.validation import ParameterError
from selfish_lib.report import cli
from selfish_lib.report.paper import build, chapters, findings
from selfish_lib.report.paper.references import Bibliography, CitationError

ROOT = Path(__file__).resolve().parents[1]
PAPER_SRC = ROOT / "paper_src"
CHROMIUM = Path(os.environ.get("SELFISH_CHROMIUM", "/usr/bin/chromium"))
REQUIRED = os.environ.get("SELFISH_REQUIRE_BROWSER", "") == "1"

INJECTED = """# Parameters
profile = "smoke"
device = "auto"
seeds = None
results_dir = "/home/someone/work/results"
data_path = "/home/someone/data/tinyshakespeare.txt"
progress = False
report_dir = "/home/someone/work/reports/smoke"
notebook_name = "03_hns_training"
layout = 2.0
"""


# --- parameters and paths -------------------------------------------------------------------


def test_parameters_are_shown_without_the_machines_paths():
    shown = chapters.portable_parameters(INJECTED)
    assert "/home/someone" not in shown
    assert 'results_dir = "results"' in shown and "data_path = None" in shown
    assert "layout = 2.0" in shown and 'profile = "smoke"' in shown
    assert "report_dir =" not in shown and "progress =" not in shown
    assert "notebook_name =" not in shown
    values = chapters.injected_parameters(INJECTED)
    assert values["layout"] == 2.0 and values["results_dir"].startswith("/home/someone")


def test_scrub_paths_replaces_each_path_whole_in_every_spelling():
    paths = {"/home/someone/work/results": "[results_dir]", "/home/someone": "[home]"}
    text = (
        '<p>runs in /home/someone/work/results/runs/abc, a JSON "\\/home\\/someone\\/x"</p>'
        "<p>home /home/someone/notes, not /home/someoneelse</p>"
    )
    text = text.replace("\\/", "/")
    scrubbed = chapters.scrub_paths(text, paths)
    assert "[results_dir]/runs/abc" in scrubbed  # the longer path keeps its own name
    assert "[home]/notes" in scrubbed and "/home/someoneelse" in scrubbed
    assert chapters.paths_left(scrubbed, paths) == []
    assert chapters.paths_left(text, paths) == list(paths)


# --- numbering and cross-references ---------------------------------------------------------


def figure(anchor: str, kind: str = "Figure") -> str:
    return (
        f'<figure class="numbered x" id="{anchor}" data-kind="{kind}"><figcaption>'
        f'<span class="number" data-label="{anchor}"></span> caption</figcaption></figure>'
    )


def test_figures_and_tables_are_numbered_in_order_and_references_filled():
    page = (
        '<p>see <a class="xref" href="#b"></a> and <a class="xref" href="#t"></a>'
        ' in <a class="xref" href="#ch-03"></a></p>'
        + figure("a") + figure("t", "Table") + figure("b")
    )  # fmt: skip
    numbered, numbers = chapters.number_items(page, {"ch-03": "chapter 03"})
    assert numbers == {"a": "Figure 1", "t": "Table 1", "b": "Figure 2"}
    assert '<a class="xref" href="#b">Figure 2</a>' in numbered
    assert '<a class="xref" href="#t">Table 1</a>' in numbered
    assert '<a class="xref" href="#ch-03">chapter 03</a>' in numbered
    assert '<span class="number">Figure 1.</span>' in numbered


def test_a_reference_to_nothing_is_an_error():
    with pytest.raises(chapters.UnresolvedReference, match="#nowhere"):
        chapters.number_items('<a class="xref" href="#nowhere"></a>' + figure("a"))


# --- the claims and their wording -----------------------------------------------------------


def claim(verdict: str, holm: str, *, family: str = "primary", claim_id: str = "C3") -> dict:
    return {
        "claim": claim_id, "statement": "HNS has lower loss than CE on ranks 41-50.",
        "source": "03_hns_training", "metric": "validation loss", "scope": "ranks 41-50",
        "A": "CE", "B": "HNS", "diff": 0.0123, "diff_lo": 0.004, "diff_hi": 0.0206,
        "n_seeds": 6, "test": "greater", "margin": 0.0, "p_value": 0.0123,
        "p_signflip": 0.031, "p_holm": 0.08 if holm != verdict else 0.02,
        "verdict": verdict, "verdict_holm": holm, "family": family,
        "seeds_needed": 9.0 if verdict == "inconclusive" else math.nan,
    }  # fmt: skip


def test_wording_follows_the_verdict_after_holm():
    supported = findings.finding(claim("supported", "supported"))
    assert "supported. HNS has lower loss than CE on ranks 41-50." in supported
    assert "+0.0123 [+0.004, +0.0206]" in supported and "6 seeds" in supported
    contradicted = findings.finding(claim("contradicted", "contradicted"))
    assert "contradicted" in contradicted and "go against the claim" in contradicted
    undecided = findings.finding(claim("inconclusive", "inconclusive"))
    assert "not decided" in undecided and "leave open whether" in undecided
    assert "about 9 paired seeds" in undecided and "supported" not in undecided
    lost = findings.finding(claim("supported", "inconclusive"))
    assert "not a finding" in lost and "not after Holm's correction" in lost


def test_the_glance_table_holds_the_primary_family_only():
    rows = [
        claim("supported", "supported"),
        claim("supported", "inconclusive", claim_id="C2"),
        claim("inconclusive", "inconclusive", family="exploratory", claim_id="C5"),
    ]
    table = findings.glance_table(rows, ["03_hns_training"])
    assert table.count("<tr>") == 3  # the header and two primary rows
    assert '<a href="#ch-03">C3</a>' in table and "C5" not in table
    assert "(before: supported)" in table  # C2: decided alone, not after Holm
    assert "+0.0123 [+0.004, +0.0206]" in table
    assert findings.counts(rows) == {"supported": 1, "contradicted": 0, "inconclusive": 1}
    sentence = findings.family_sentence(rows)
    assert "2 primary contrasts" in sentence and "1 supported" in sentence
    assert "none contradicted" in sentence and "1 not decided" in sentence
    assert "C5" in findings.exploratory_table(rows, [])
    assert findings.family_sentence([]) == "No primary contrast was computed in this report."


# --- the bibliography -----------------------------------------------------------------------


def test_every_citation_of_the_sources_resolves_and_unknown_keys_fail():
    bibliography = Bibliography(PAPER_SRC / "references.bib")
    for source in PAPER_SRC.glob("*.md"):
        bibliography.replace_citations(source.read_text(encoding="utf-8"))  # raises if unknown
    assert {"turumtaev_selfish_tokens", "holm1979", "yu2022agg"} <= set(bibliography.cited)
    with pytest.raises(CitationError, match="nosuchkey"):
        bibliography.replace_citations("as shown [@nosuchkey]")
    fresh = Bibliography(PAPER_SRC / "references.bib")  # nothing cited yet
    linked = fresh.link_mentions("<p>AGG (Yu et al., 2022) and <code>Lin et al., 2017</code>")
    assert '(<a class="citation" href="#ref-yu2022agg">Yu et al., 2022</a>)' in linked
    assert "<code>Lin et al., 2017</code>" in linked  # code is left alone
    listed = fresh.list_html()
    assert 'id="ref-yu2022agg"' in listed and 'id="ref-lin2017focal"' not in listed


def test_the_bibliography_holds_the_works_the_study_builds_on():
    bibliography = Bibliography(PAPER_SRC / "references.bib")
    labels = {key: ref.label for key, ref in bibliography.references.items()}
    assert labels["gao2019degeneration"] == "Gao et al., 2019"
    assert labels["press2017tying"] == "Press and Wolf, 2017"
    assert labels["holm1979"] == "Holm, 1979"
    expected = {"turumtaev_selfish_tokens", "cho2025probability", "gao2019degeneration",
                "yu2022agg", "menon2021logit", "peters2019entmax", "lin2017focal",
                "karpathy_nanogpt", "karpathy_tinyshakespeare", "elotl"}  # fmt: skip
    assert expected <= set(labels)


def test_a_value_the_sources_name_must_be_computed(tmp_path):
    (tmp_path / "broken.md").write_text("We trained {{ n_runz }} runs.")
    with pytest.raises(ParameterError, match="n_runz"):
        build.render_source("broken", {"n_runs": 3}, tmp_path)
    assert build.render_source("broken", {"n_runz": 3}, tmp_path) == "We trained 3 runs."


# --- one chapter from a small executed notebook ---------------------------------------------


def small_notebook() -> nbformat.NotebookNode:
    """An executed notebook as papermill leaves one: a title, parameters, a run table, a
    chart, a result table and a computed conclusion."""
    nb = nbformat.v4.new_notebook()
    runs = pd.DataFrame({
        "run": ["(CE, 0)", "(HNS, 0)"], "id": ["0123456789abcdef", "fedcba9876543210"],
        "setting": ["single"] * 2, "objective": ["CE", "HNS(layout=2)"], "seed": [0, 0],
        "steps": [30, 30], "train_seconds": [1.5, 2.5],
    })  # fmt: skip
    spec = {
        "mark": "bar", "title": {"text": "Loss by group", "subtitle": "mean over seeds"},
        "data": {"values": [{"x": 1, "y": 2}]},
        "encoding": {"x": {"field": "x", "type": "quantitative"}},
    }  # fmt: skip
    table = pd.DataFrame({"group": ["1-10"], "HNS − CE": ["+0.01 [0, 0.02]"]})
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            "# 03 · A small chapter\n\nSee notebook 02 and (Gao et al., 2019)."
        ),
        nbformat.v4.new_code_cell("profile = 'smoke'", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(INJECTED, metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("runs = study.planned_runs()", outputs=[
            nbformat.v4.new_output("display_data", data={"text/html": runs.to_html()})]),
        nbformat.v4.new_markdown_cell("## Loss by frequency group"),
        nbformat.v4.new_code_cell("study.figure(chart, 'loss')", execution_count=3, outputs=[
            nbformat.v4.new_output("execute_result", execution_count=3, data={
                "application/vnd.vegalite.v5+json": spec,
                "image/svg+xml": "<svg><text>static</text></svg>", "text/plain": "chart"})]),
        nbformat.v4.new_code_cell("display(table)", outputs=[
            nbformat.v4.new_output("display_data", data={"text/html": table.to_html()})]),
        nbformat.v4.new_code_cell("Markdown(reading)", outputs=[
            nbformat.v4.new_output(
                "execute_result", data={"text/markdown": "## What it says\n\nCE wins."}
            )]),
    ]  # fmt: skip
    return nb


def test_a_chapter_numbers_its_outputs_folds_its_code_and_reads_its_runs():
    bibliography = Bibliography(PAPER_SRC / "references.bib")
    context = chapters.Context(
        profile="smoke", profile_seeds=(0, 1), numerics_version=NUMERICS_VERSION,
        commit="abc123", chapters=["02_gradient_scenarios", "03_small"],
        render_markdown=lambda text: build.render_markdown(text, bibliography),
    )  # fmt: skip
    chapter = chapters.ChapterBuilder("03_small", small_notebook(), context).build()
    assert html.unescape(chapter.title) == "03 · A small chapter"
    assert chapter.run_ids == ["0123456789abcdef", "fedcba9876543210"]
    assert chapter.seeds == [0]
    assert [run.train_seconds for run in chapter.runs] == [1.5, 2.5]
    assert len(chapter.figures) == 1 and len(chapter.tables) == 1  # the run table is folded
    page, numbers = chapters.number_items(chapter.html, {"appendix-runs": "Appendix C"})
    assert numbers == {chapter.figures[0]: "Figure 1", chapter.tables[0]: "Table 1"}
    assert "Figure 1.</span> Loss by frequency group: Loss by group: mean over seeds" in page
    assert page.count('<details class="code">') == 5  # every code cell, folded
    assert '<details class="parameters" open>' in page and "/home/someone" not in page
    assert "<code>01234567</code>" in page  # the short run ids under each figure and table
    assert "numerics version" in page and "commit <code>abc123</code>" in page
    assert '<a class="xref-chapter" href="#ch-02">02</a>' in page  # "notebook 02" links
    assert 'href="#ref-gao2019degeneration"' in page
    assert '<div class="selfish-vega" data-spec=' in page and "<text>static</text>" in page
    assert re.search(r'<h3 id="ch-03-what-it-says">What it says</h3>', page)


def test_run_rows_reads_a_run_table_and_nothing_else():
    runs = pd.DataFrame({"id": ["a1"], "seed": [3], "train_seconds": [0.5]})
    (row,) = chapters.run_rows(runs.to_html())
    assert (row.id, row.seed, row.train_seconds) == ("a1", 3, 0.5)
    assert chapters.run_rows(pd.DataFrame({"group": ["1-10"]}).to_html()) is None
    assert chapters.run_rows("<p>no table</p>") is None


# --- the published paper --------------------------------------------------------------------


def fake_build(reports: Path, profile: str = "paper") -> Path:
    """A report folder holding a build's files (their content does not matter here)."""
    folder = reports / profile
    folder.mkdir(parents=True)
    (folder / "paper.pdf").write_bytes(b"%PDF-1.4 made up")
    (folder / "paper.html").write_text("<html></html>")
    (folder / "claims.json").write_text("[]")
    manifest = {"profile": profile, "numerics_version": NUMERICS_VERSION, "commit": "abc"}
    (folder / "paper.manifest.json").write_text(json.dumps(manifest))
    return folder


def test_publish_copies_the_build_and_its_check_finds_a_stale_or_changed_paper(tmp_path):
    fake_build(tmp_path / "reports")
    target = build.publish_paper("paper", tmp_path / "reports", tmp_path / "paper")
    assert sorted(p.name for p in target.iterdir()) == sorted(build.PUBLISHED)
    assert build.published_problems(target) == []
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["numerics_version"] = NUMERICS_VERSION - 1  # built before the numbers changed
    (target / "manifest.json").write_text(json.dumps(manifest))
    (problem,) = build.published_problems(target)
    assert problem.startswith("stale") and f"version {NUMERICS_VERSION - 1}" in problem
    (target / "paper.pdf").write_bytes(b"%PDF-1.4 edited by hand")
    assert any("checksum" in p for p in build.published_problems(target))
    (target / "manifest.json").unlink()
    assert "missing" in build.published_problems(target)[0]


def test_a_report_whose_chapters_write_no_claims_publishes_an_empty_list(tmp_path):
    folder = fake_build(tmp_path / "reports")
    (folder / "claims.json").unlink()  # chapters 02 and 03 alone write no claims
    target = build.publish_paper("paper", tmp_path / "reports", tmp_path / "paper")
    assert json.loads((target / "claims.json").read_text()) == []
    assert build.published_problems(target) == []
    (folder / "paper.pdf").unlink()
    with pytest.raises(FileNotFoundError, match="paper.pdf"):
        build.publish_paper("paper", tmp_path / "reports", tmp_path / "paper2")


def test_the_smoke_profile_is_never_published(tmp_path):
    fake_build(tmp_path / "reports", "smoke")
    with pytest.raises(ParameterError, match="smoke"):
        build.publish_paper("smoke", tmp_path / "reports", tmp_path / "paper")
    assert not (tmp_path / "paper").exists()


def test_the_published_paper_in_the_repository_matches_the_codes_numerics():
    if not (ROOT / "paper" / "manifest.json").is_file():
        pytest.skip("paper/ holds no published build yet (selfish paper --profile paper --publish)")
    assert build.published_problems(ROOT / "paper") == []


def test_cli_paper_names_a_missing_report_and_refuses_to_publish_smoke(tmp_path, capsys):
    assert cli.main(["paper", "--profile", "smoke", "--reports-dir", str(tmp_path)]) == 1
    assert "selfish reproduce --profile smoke" in capsys.readouterr().err
    code = cli.main(["paper", "--profile", "smoke", "--reports-dir", str(tmp_path), "--publish"])
    assert code == 2 and "smoke profile only checks the pipeline" in capsys.readouterr().err
    fake_build(tmp_path / "reports")
    build.publish_paper("paper", tmp_path / "reports", tmp_path / "paper")
    args = ["paper", "--check-published", "--paper-dir", str(tmp_path / "paper")]
    assert cli.main(args) == 0 and "up to date" in capsys.readouterr().out
    (tmp_path / "paper" / "paper.html").write_text("changed")
    assert cli.main(args) == 1 and "checksum" in capsys.readouterr().err


# --- the paper of the smoke reproduction ----------------------------------------------------


@pytest.fixture(scope="module")
def smoke_paper(smoke_report, tmp_path_factory) -> build.PaperBuild:
    """The paper's page built from a copy of the session's smoke report (the PDF, printed
    by Chromium and read back, is the slow test's)."""
    reports = tmp_path_factory.mktemp("paper") / "reports"
    shutil.copytree(smoke_report, reports / "smoke")
    return build.build_paper("smoke", reports, pdf=False)


def test_the_smoke_paper_has_every_chapter_figure_and_no_machine_path(smoke_paper, smoke_report):
    page = smoke_paper.html.read_text(encoding="utf-8")
    manifest = json.loads(smoke_paper.manifest.read_text())
    executed = sorted(p.stem for p in smoke_report.glob("[0-9][0-9]_*.ipynb"))
    assert sorted(manifest["chapters"]) == executed
    assert manifest["numerics_version"] == NUMERICS_VERSION and manifest["profile"] == "smoke"
    assert manifest["figures"] == page.count('data-kind="Figure"') > len(executed)
    for name in executed:
        assert f'id="{chapters.chapter_anchor(name)}"' in page
        assert manifest["chapters"][name]["seeds"]
    assert any(entry["runs"] for entry in manifest["chapters"].values())
    for path in (str(smoke_report), str(smoke_paper.html.parent), str(ROOT), str(Path.home())):
        assert path not in page
    assert not re.search(r"<script[^>]*\bsrc=", page)  # every script inline
    assert not re.search(r"<link[^>]*\bhref=", page)
    assert "Claims at a glance" in page and 'id="tbl-claims"' in page
    assert page.count('<details class="code">') > len(executed)


@pytest.mark.slow
def test_the_smoke_pdf_holds_every_figure_caption(smoke_report, tmp_path):
    """``make paper`` prints the page to paper.pdf; every figure's caption is in its text.
    Slow: printing a smoke paper and reading back its text takes a minute or more."""
    from pypdf import PdfReader

    if build.find_chromium() is None and not REQUIRED:
        pytest.skip("no Chromium to print the PDF (Debian: apt-get install chromium)")
    shutil.copytree(smoke_report, tmp_path / "reports" / "smoke")
    paper = build.build_paper("smoke", tmp_path / "reports")
    assert paper.pdf.is_file() and paper.pdf.read_bytes().startswith(b"%PDF")
    manifest = json.loads(paper.manifest.read_text())
    text = "\n".join(page.extract_text() for page in PdfReader(paper.pdf).pages)
    text = re.sub(r"\s+", " ", text)
    missing = [n for n in range(1, manifest["figures"] + 1) if f"Figure {n}." not in text]
    assert not missing, f"captions not found in the PDF: Figure {missing}"
    assert "Claims at a glance" in text and "References" in text


def missing_browser() -> str | None:
    """Why the browser check cannot run here, or None."""
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    return None


# What the page must show once loaded: counts a test compares, gathered in the page.
PAGE_FACTS = """() => {
    const ids = new Set(Array.from(document.querySelectorAll("[id]")).map(e => e.id));
    const internal = Array.from(document.querySelectorAll("a[href^='#']"))
        .map(a => a.getAttribute("href").slice(1)).filter(h => h.length > 0);
    const cites = Array.from(document.querySelectorAll("a.citation"))
        .map(a => a.getAttribute("href").slice(1));
    return {
        declared: document.querySelectorAll("div.selfish-vega").length,
        drawn: document.querySelectorAll("div.selfish-vega > .chart-wrapper > svg.marks").length,
        captions: Array.from(document.querySelectorAll("figure.figure figcaption .number"))
            .map(s => s.textContent),
        unresolved: internal.filter(h => !ids.has(h)),
        citations: cites.length,
        uncited: cites.filter(h => !document.querySelector("#references li[id='" + h + "']")),
        empty_xrefs: Array.from(document.querySelectorAll("a.xref"))
            .filter(a => !a.textContent).length,
    };
}"""


@pytest.mark.browser
def test_the_smoke_paper_in_a_browser_offline(smoke_paper):
    reason = missing_browser()
    if reason is not None:
        if REQUIRED:
            pytest.fail(f"SELFISH_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    errors, outside, found = [], [], {}

    def browse() -> None:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=list(build.BROWSER_ARGS)
            )
            try:
                page = chromium.new_page()
                page.on("console", lambda m: m.type == "error" and errors.append(m.text))
                page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))

                def route(r):  # the network is cut: only the file itself (and data:) loads
                    if r.request.url.startswith(("file:", "data:", "blob:")):
                        r.continue_()
                    else:
                        outside.append(r.request.url)
                        r.abort()

                page.route("**/*", route)
                page.goto(smoke_paper.html.as_uri(), wait_until="load")
                deadline = time.monotonic() + 90
                facts = page.evaluate(PAGE_FACTS)
                while facts["drawn"] < facts["declared"] and not errors:
                    assert time.monotonic() < deadline, (
                        f"charts drawn: {facts['drawn']} of {facts['declared']}"
                    )
                    page.wait_for_timeout(250)
                    facts = page.evaluate(PAGE_FACTS)
            finally:
                chromium.close()
        found.update(facts)

    # in a thread of its own: a test before it may leave an asyncio loop running in this
    # one (kernels, papermill), where Playwright's sync API refuses to start
    failure = []
    worker = threading.Thread(target=lambda: _catching(browse, failure))
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    facts = found
    assert not errors, errors
    assert not outside, f"the paper asked the network for {outside}"
    assert facts["declared"] > 0 and facts["drawn"] == facts["declared"]
    assert facts["captions"] == [f"Figure {n}." for n in range(1, len(facts["captions"]) + 1)]
    assert facts["unresolved"] == [] and facts["empty_xrefs"] == 0
    assert facts["citations"] > 0 and facts["uncited"] == []


def _catching(call, failure: list) -> None:
    """``call()``, its exception appended to ``failure`` (a thread cannot raise to its
    caller)."""
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
        failure.append(exc)


def test_every_notebooks_paths_are_scrubbed_even_when_they_differ(tmp_path):
    summary = {
        "notebooks": {
            "01_a": {"parameters": {"results_dir": "/x/one", "progress": False}},
            "02_b": {"parameters": {"results_dir": "/x/two", "data_path": "/d/corpus.txt"}},
        }
    }
    paths = build.machine_paths(summary, tmp_path)
    assert {"/x/one", "/x/two", "/d/corpus.txt", str(tmp_path), str(ROOT)} <= set(paths)
    assert paths["/x/two"] == "[results_dir]" and paths["/d/corpus.txt"] == "[data_path]"
    page = chapters.scrub_paths("<p>/x/one/runs and /x/two</p>", paths)
    assert page == "<p>[results_dir]/runs and [results_dir]</p>"
