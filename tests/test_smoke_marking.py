"""The smoke reproduction says what its numbers are: every executed notebook opens with a
banner saying they only check the pipeline, ends with the same note before its reading,
and every fragment and claim it writes is marked; intervals of bounded metrics stay in
their range even with two seeds."""

from __future__ import annotations

import json

import nbformat
import pytest

from selfish_lib.report import pipeline
from selfish_lib.study.readings import CLIPPED_NOTE, PIPELINE_CHECK_NOTE

NOTEBOOKS = sorted(pipeline.available_notebooks())
BANNER_WORDS = "only check that the pipeline runs"


@pytest.fixture(scope="module")
def report(smoke_report):
    """The smoke reports folder (tests/conftest.py builds it once per session)."""
    return smoke_report


def markdown_outputs(cell) -> list[str]:
    return [
        o["data"]["text/markdown"]
        for o in cell.get("outputs", [])
        if "text/markdown" in o.get("data", {})
    ]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_smoke_notebook_opens_with_the_banner_and_closes_with_the_note(report, name):
    nb = nbformat.read(report / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    (setup,) = [c for c in code if "open_study(globals())" in c.source]
    (banner,) = markdown_outputs(setup)
    assert banner.startswith("> ") and BANNER_WORDS in banner and "Smoke profile" in banner
    closing = markdown_outputs(code[-1])[-1]
    assert closing.startswith(f"> *{PIPELINE_CHECK_NOTE}*")
    html = (report / f"{name}.html").read_text()
    assert "<blockquote>" in html and BANNER_WORDS in html
    first_chart = html.find('class="selfish-vega"')
    assert first_chart == -1 or html.index(BANNER_WORDS) < first_chart  # near the top


def test_every_fragment_is_marked_as_a_pipeline_check(report):
    summary = json.loads((report / "summary.json").read_text())
    assert set(summary["fragments"]) == set(NOTEBOOKS)
    for name, fragment in summary["fragments"].items():
        assert fragment["profile"] == "smoke", name
        assert fragment["pipeline_check_only"] is True, name


def test_every_claim_is_marked_and_still_has_its_verdict(report):
    claims = json.loads((report / "claims.json").read_text())
    assert claims
    for claim in claims:
        assert claim["profile"] == "smoke" and claim["pipeline_check_only"] is True
        assert claim["verdict"] in ("supported", "contradicted", "inconclusive")
        if claim["metric"] in ("top-1 accuracy", "recall@5", "MRR"):
            for side in ("A", "B"):
                if claim[f"{side}_lo"] is not None:
                    assert 0.0 <= claim[f"{side}_lo"] <= claim[f"{side}_hi"] <= 1.0
            if claim["diff_lo"] is not None:
                assert -1.0 <= claim["diff_lo"] <= claim["diff_hi"] <= 1.0


def test_smoke_intervals_of_bounded_metrics_stay_in_range(report):
    summary = json.loads((report / "summary.json").read_text())
    sweep = summary["fragments"]["06_layout_explorer"]["table"]
    for row in sweep:
        for name in ("low_top1", "low_mrr", "high_top1"):
            if isinstance(row[f"{name}_lo"], float):
                assert 0.0 <= row[f"{name}_lo"] <= row[f"{name}_hi"] <= 1.0
    validation = summary["fragments"]["03_hns_training"]["validation"]
    for group in validation.values():
        for metric in ("top1", "recall5", "mrr"):
            lo, hi = group[metric]["ci"]
            if isinstance(lo, float):
                assert -1.0 <= lo <= hi <= 1.0


def test_a_reading_whose_intervals_were_clipped_says_so(report):
    summary = json.loads((report / "summary.json").read_text())
    checked = 0
    for name in NOTEBOOKS:
        fragment = summary["fragments"][name]
        reading = fragment.get("reading", fragment)  # 06 files its reading under "reading"
        clipped = reading.get("intervals_clipped")
        if clipped is None:
            continue
        nb = nbformat.read(report / f"{name}.ipynb", as_version=4)
        closing = markdown_outputs([c for c in nb.cells if c.cell_type == "code"][-1])[-1]
        assert (CLIPPED_NOTE in closing) is clipped, name
        checked += 1
    assert checked == 6  # every chapter with intervals: 02 to 06, and 10
