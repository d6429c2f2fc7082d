"""Every notebook executed through the pipeline in the smoke profile: it runs without
errors, ends with its computed conclusion, saves its figures and gives an HTML
report that shows the charts without any network access; plus what each one must
contain."""

from __future__ import annotations

import json
import re

import nbformat
import pytest

from selfish_lib.report import pipeline
from selfish_lib.study import hypothesis as we


@pytest.fixture(scope="module")
def report(smoke_report):
    """The smoke reports folder (tests/conftest.py builds it once per session)."""
    return smoke_report


NOTEBOOKS = sorted(pipeline.available_notebooks())


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_notebook_runs_cleanly_and_reports_offline(report, name):
    nb = nbformat.read(report / f"{name}.ipynb", as_version=4)
    (injected,) = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert f'notebook_name = "{name}"' in injected.source  # the study object's name
    summary = json.loads((report / "summary.json").read_text())
    assert name in summary["fragments"]  # written by study.fragment under that name
    assert not [o for o in outputs(nb) if o.get("output_type") == "error"]
    assert not [o for o in outputs(nb) if o.get("name") == "stderr"]
    last_cell = [c for c in nb.cells if c.cell_type == "code"][-1]
    closing = [o for o in last_cell.get("outputs", []) if "text/markdown" in o.get("data", {})]
    assert closing, f"{name} does not end with a computed Markdown conclusion"
    html = (report / f"{name}.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc=", html)
    assert not re.search(r"<link[^>]*\bhref=[\"']https?:", html)
    assert len(re.findall(r"<svg\b", html)) >= 1


def test_notebook_02_measures_both_objectives_and_states_a_verdict(report):
    nb = nbformat.read(report / "02_gradient_scenarios.ipynb", as_version=4)
    markdown = [
        o["data"]["text/markdown"] for o in outputs(nb) if "text/markdown" in o.get("data", {})
    ]
    conclusion = markdown[-1]
    assert "ranks 51-60" in conclusion and "ranks 61-65" in conclusion
    assert re.search(
        r"outweighs scenarios 1 and 2.1 together: \*\*(yes|no|inconclusive)", conclusion
    )
    summary = json.loads((report / "summary.json").read_text())
    fragment = summary["fragments"]["02_gradient_scenarios"]
    assert set(fragment["groups"]) == {"51-60", "61-65"}
    for group in fragment["groups"].values():
        assert {"CE", "HNS", "hns_minus_ce"} <= set(group)
    figures = {p.name for p in (report / "figures").iterdir()}
    for name in ("02_scenario_norms_by_rank", "02_nontarget_share_by_group", "02_scenario_curves"):
        assert f"{name}.svg" in figures


def outputs(nb):
    return [o for cell in nb.cells for o in cell.get("outputs", [])]


def test_notebook_01_runs_without_errors(report):
    nb = nbformat.read(report / "01_hypothesis.ipynb", as_version=4)
    assert not [o for o in outputs(nb) if o.get("output_type") == "error"]
    assert not [o for o in outputs(nb) if o.get("name") == "stderr"]
    assert not (report / "01_hypothesis.failed.ipynb").exists()


def test_notebook_01_ends_with_its_computed_conclusion(report):
    nb = nbformat.read(report / "01_hypothesis.ipynb", as_version=4)
    markdown = [
        o["data"]["text/markdown"] for o in outputs(nb) if "text/markdown" in o.get("data", {})
    ]
    assert markdown, "the closing cell displays no Markdown"
    conclusion = markdown[-1]
    facts = we.summarize(we.default_example(), 2.0)
    assert f"{facts['n_excluded']} of {facts['n_rows']}" in conclusion
    assert f"{facts['excluded_share_ce']:.1%}" in conclusion
    assert "most frequent symbols" in conclusion


def test_notebook_01_charts_carry_an_interactive_spec_and_an_svg(report):
    nb = nbformat.read(report / "01_hypothesis.ipynb", as_version=4)
    charts = [o["data"] for o in outputs(nb) if "image/svg+xml" in o.get("data", {})]
    assert len(charts) == 3
    for data in charts:
        assert "application/vnd.vegalite.v5+json" in data


def test_notebook_01_html_is_offline_and_shows_the_charts(report):
    html = (report / "01_hypothesis.html").read_text()
    assert html.count('class="selfish-vega"') == 3
    assert len(re.findall(r"<svg\b", html)) >= 3
    assert not re.search(r"<script[^>]*\bsrc=", html)  # every script is inline
    assert not re.search(r"<link[^>]*\bhref=[\"']https?:", html)
    assert "window.vegaEmbed" in html  # the inlined bundle draws the interactive charts


def test_notebook_01_saves_figures_and_its_summary_fragment(report):
    figures = sorted(p.name for p in (report / "figures").iterdir())
    for name in ("01_frequency_by_rank", "01_group_shares", "01_worked_example"):
        assert f"{name}.svg" in figures and f"{name}.png" in figures
    summary = json.loads((report / "summary.json").read_text())
    assert summary["notebooks"]["01_hypothesis"]["status"] == "ok"
    fragment = summary["fragments"]["01_hypothesis"]
    facts = we.summarize(we.default_example(), 2.0)
    assert fragment["worked_example"]["n_excluded"] == facts["n_excluded"]
    assert fragment["worked_example"]["excluded_share_ce"] == pytest.approx(
        facts["excluded_share_ce"]
    )
    assert 0 < fragment["rarest_group_share"] < fragment["top_group_share"] < 1


def test_notebook_05_saves_its_figures_and_a_summary_with_verdicts(report):
    figures = {p.name for p in (report / "figures").iterdir()}
    for name in (
        "05_projections",
        "05_norms_by_rank",
        "05_unigram_probe",
        "05_metrics",
        "05_paired_differences",
    ):
        assert f"{name}.svg" in figures and f"{name}.png" in figures
    summary = json.loads((report / "summary.json").read_text())
    fragment = summary["fragments"]["05_embedding_geometry"]
    assert {"layout", "n_rare", "n_seeds", "metrics", "verdicts", "zero_directions"} <= set(
        fragment
    )
    assert fragment["n_seeds"] == 2  # the smoke profile's seeds, paired
    for metric in ("twin_distance", "language_centroid_distance", "isotropy", "probe_kl"):
        assert {"initial", "CE", "HNS", "hns_minus_ce"} <= set(fragment["metrics"][metric])
    for metric in ("twin_distance", "language_centroid_distance", "rare_centroid_distance_low"):
        assert fragment["verdicts"][metric] in ("closer", "farther", "indistinguishable")
    assert set(fragment["zero_directions"]) == {"initial", "CE", "HNS"}
    nb = nbformat.read(report / "05_embedding_geometry.ipynb", as_version=4)
    markdown = [
        o["data"]["text/markdown"] for o in outputs(nb) if "text/markdown" in o.get("data", {})
    ]
    assert "**In short:**" in markdown[-1]


def test_notebook_06_sweeps_the_layouts_and_reports_them_without_a_kernel(report):
    import math

    from selfish_lib.engine.losses import nucleus_margin
    from selfish_lib.study import layout as sweep

    summary = json.loads((report / "summary.json").read_text())
    assert summary["notebooks"]["06_layout_explorer"]["status"] == "ok"
    fragment = summary["fragments"]["06_layout_explorer"]
    assert {
        "profile",
        "steps",
        "seeds",
        "layouts",
        "schedule",
        "nucleus",
        "table",
        "reading",
    } <= set(fragment)
    labels = [sweep.layout_label(v) for v in sweep.DEFAULT_LAYOUTS] + ["cosine 8→2"]
    assert [row["label"] for row in fragment["table"]] == labels
    for row in fragment["table"]:
        assert {
            "low_top1",
            "low_top1_lo",
            "low_top1_hi",
            sweep.POOLED_LOSS,
            "low_top1_vs_ce",
        } <= set(row)
        assert row["n_seeds"] == len(fragment["seeds"])
    assert fragment["nucleus"]["margin"] == pytest.approx(nucleus_margin(130, 0.9))
    assert fragment["reading"]["best_low_top1"]["layout"] in labels
    figures = {p.name for p in (report / "figures").iterdir()}
    for name in ("06_layout_sweep", "06_toy_gradients"):
        assert f"{name}.svg" in figures and f"{name}.png" in figures
    nb = nbformat.read(report / "06_layout_explorer.ipynb", as_version=4)
    conclusion = [
        o["data"]["text/markdown"] for o in outputs(nb) if "text/markdown" in o.get("data", {})
    ][-1]
    assert "Low-resource top-1" in conclusion and "Overall loss" in conclusion
    assert f"{math.log(130) - math.log(0.1):.3f}" in conclusion
    # Three widgets become notes in the HTML; the static toy and sweep charts stay drawn.
    html = (report / "06_layout_explorer.html").read_text()
    assert html.count("An interactive widget is here") == 3
    assert html.count('class="selfish-vega"') == 2
    assert "Layout sweep, chosen: 2" in html


def test_notebook_07_compares_every_arm_and_adds_its_claims(report):
    """Every registered peer and ablation appears in the ranking of both settings, tuning
    chose a value for every tuned arm, each chart is saved, and the peer claims stand
    in claims.json beside chapter 04's."""
    from selfish_lib.study import field

    figures = {p.name for p in (report / "figures").iterdir()}
    names = ["tuning"] + [f"{k}_{s}" for k in ("metrics", "differences", "shares", "geometry")
                          for s in ("single", "bilingual")]  # fmt: skip
    for name in names:
        assert f"07_{name}.svg" in figures and f"07_{name}.png" in figures, name
    fragment = json.loads((report / "summary.json").read_text())["fragments"][
        "07_hns_against_the_field"
    ]
    arms = [arm.name for arm in field.arms()]
    for setting in ("single", "bilingual"):
        assert sorted(fragment["ranking"][setting]) == sorted(arms)
        tuned = {a.name for a in field.arms() if a.tuned}
        assert set(fragment["chosen"][setting]) == tuned
    rows = json.loads((report / "claims.json").read_text())
    sources = {r["source"] for r in rows}
    assert {"04_bilingual_simulation", "07_hns_against_the_field"} <= sources
    f1 = [r for r in rows if r["claim"] == "F1" and r["primary"]]
    peers = {a.name for a in field.arms() if a.role == "peer"}
    assert {r["B"] for r in f1} == peers
    assert all(r["verdict"] in ("supported", "contradicted", "inconclusive") for r in rows)
    assert [r for r in rows if r["claim"] == "F2" and r["primary"]]


def test_notebook_08_runs_every_vocabulary_and_adds_its_claims(report):
    """Every vocabulary size of the smoke profile is trained in both settings, each chart
    is saved, the tokenizer table has the characters and every V, the loss is compared in
    nats per character with the seeds of each row, and the claims S1-S4 stand in
    claims.json beside the other chapters', each with a definition."""
    from selfish_lib.engine.profiles import get_profile

    sizes = list(get_profile("smoke").subword["sizes"])
    figures = {p.name for p in (report / "figures").iterdir()}
    for name in ("zipf", "shares_single", "shares_bilingual", "effect_by_size", "loss_per_char",
                 "probe"):  # fmt: skip
        assert f"08_{name}.svg" in figures and f"08_{name}.png" in figures, name
    fragment = json.loads((report / "summary.json").read_text())["fragments"]["08_subword_scale"]
    assert fragment["sizes"] == sizes
    assert sorted({row["V"] for row in fragment["probe"]}) == sizes
    nb = nbformat.read(report / "08_subword_scale.ipynb", as_version=4)
    tables = "".join(o.get("data", {}).get("text/html", "") for o in outputs(nb))
    for size in sizes:
        assert f"bpe-{size}" in tables
    for column in ("loss per character (nats)", "CE per character (nats)",
                   "HNS per character (nats)", "seeds"):  # fmt: skip
        assert column in tables, column
    across = fragment["across_sizes"]
    assert {"all text: loss_per_char", "low: loss_per_char", "low: top1"} <= set(across)
    for entry in across.values():
        assert {str(v) for v in sizes} <= set(entry)
    rows = json.loads((report / "claims.json").read_text())
    ours = [r for r in rows if r["source"] == "08_subword_scale"]
    assert all(str(r["definition"]).strip() for r in ours)
    assert {r["metric"] for r in ours if r["claim"].startswith("S2")} == {"loss", "loss_per_char"}
    assert {r["claim"] for r in ours} == {"S1", "S2", "S3", "S4"}
    for k in (1, 2, 3):  # one row per V (in its scope); S3 in the primary family
        scopes = {r["scope"] for r in ours if r["claim"] == f"S{k}" and r["primary"]}
        assert {scope.rsplit("V = ", 1)[1] for scope in scopes} == {str(v) for v in sizes}
    assert all(r["family"] == "primary" for r in ours if r["claim"] == "S3")
    assert {"04_bilingual_simulation", "07_hns_against_the_field"} <= {r["source"] for r in rows}
    assert all(r["verdict"] in ("supported", "contradicted", "inconclusive") for r in ours)


def test_notebook_09_measures_what_a_sampler_sees_and_adds_n1_and_n2(report):
    """The charts of both settings are saved; every measure is reported at temperature 1
    and at the fitted temperature; N1 rests on P(sample = target) and N2 on the ECE at the
    fitted temperature in claims.json; the nucleus-margin lemma is no measured result."""
    figures = {p.name for p in (report / "figures").iterdir()}
    kinds = ("sampler", "nucleus", "calibration", "reliability", "rare", "temperature", "samples")
    for kind in kinds:
        for setting in ("single", "bilingual"):
            name = f"09_{kind}_{setting}"
            assert f"{name}.svg" in figures and f"{name}.png" in figures, name
    fragment = json.loads((report / "summary.json").read_text())["fragments"]["09_sampling"]
    assert "lemma_holds" not in fragment
    both = {"CE/high", "CE/low", "HNS/high", "HNS/low"}
    assert 0 <= fragment["bilingual"]["floor"] < 1
    assert set(fragment["bilingual"]["samples"]) == set(fragment["bilingual"]["samples_fitted"])
    assert set(fragment["bilingual"]["samples"]) == both
    for setting in ("single", "bilingual"):
        assert set(fragment[setting]["temperature"]) == {"CE", "HNS"}
        assert all(t > 0 for t in fragment[setting]["temperature"].values())
        assert {"hit_0.9", "matched_0.9", "ece_floor", "rare_ece", "rare_ece_floor",
                "brier"} <= set(fragment[setting]["measures"])  # fmt: skip
    rows = [r for r in json.loads((report / "claims.json").read_text())
            if r["source"] == "09_sampling"]  # fmt: skip
    primary = {r["claim"]: r for r in rows if r["primary"]}
    assert sorted(primary) == ["N1", "N2"]
    assert primary["N1"]["metric"] == "P(sample = target)" and primary["N1"]["test"] == "not_worse"
    assert "P(a top-p 0.9 sample is the target)" in primary["N1"]["definition"]
    assert primary["N2"]["metric"] == "ECE at the fitted temperature"
    assert primary["N2"]["test"] == "not_worse" and primary["N2"]["margin"] == 0.01
    beside = {r["metric"] for r in rows if not r["primary"]}
    assert {"nucleus coverage", "coverage at a matched size", "top-1 accuracy"} <= beside
    assert all(r["verdict"] in ("supported", "contradicted", "inconclusive") for r in rows)
    assert all(r["definition"] for r in rows)
    nb = nbformat.read(report / "09_sampling.ipynb", as_version=4)
    tables = "".join(o.get("data", {}).get("text/html", "") for o in outputs(nb))
    assert "ece_floor" in tables and "rare_ece" in tables and "smallest margin" not in tables
    markdown = [
        o["data"]["text/markdown"] for o in outputs(nb) if "text/markdown" in o.get("data", {})
    ]
    conclusion = markdown[-1]
    assert "**N1**" in conclusion and "**N2**" in conclusion and "seeds 0-1" in conclusion
    assert "fitted temperature" in conclusion and "floor" in conclusion
