"""The claims table on constructed per-seed numbers with known verdicts."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from selfish_lib.engine.objectives import CrossEntropy, HardNegatives
from selfish_lib.engine.profiles import get_profile
from selfish_lib.study import bilingual, claims

SEEDS = [0, 1, 2]


def frame(rows):
    return pd.DataFrame(rows)


def scenario_rows():
    rows = []
    for s in SEEDS:
        rows.append(
            {
                "objective": "CE",
                "seed": s,
                "language": "high",
                "group": "51-60",
                "input": 1.0 + 0.01 * s,
                "target": 1.0,
                "nontarget": 0.5,
            }
        )  # 2.2 smaller
        rows.append(
            {
                "objective": "CE",
                "seed": s,
                "language": "high",
                "group": "61-65",
                "input": 0.1,
                "target": 0.1,
                "nontarget": 2.0 + 0.1 * s,
            }
        )  # 2.2 larger
    return frame(rows)


def single_rows(ce_top, hns_top, ce_mid, hns_mid):
    rows = []
    for s in SEEDS:
        for objective, top, mid in (("CE", ce_top, ce_mid), ("HNS", hns_top, hns_mid)):
            # the arms' seed noise differs a little: identical per-seed differences would
            # have no spread, and a zero-spread difference decides nothing
            j = 0.01 * s + (0.002 * (s % 2) if objective == "HNS" else 0.0)
            rows.append({"objective": objective, "seed": s, "group": "1-10", "loss": top + j})
            rows.append({"objective": objective, "seed": s, "group": "41-50", "loss": mid + j})
    return frame(rows)


def bilingual_rows(low_loss_gap):
    rows = []
    for s in SEEDS:
        for exp, both, low, top_low, top_high in (
            ("baseline", 2.0, 3.0, 0.20, 0.50),
            ("HNS", 2.1, 3.0 + low_loss_gap, 0.25, 0.499),
        ):
            jitter = 0.001 * s + (0.0002 * (s % 2) if exp == "HNS" else 0.0)
            rows += [
                {"experiment": exp, "seed": s, "language": "both", "loss": both + jitter},
                {"experiment": exp, "seed": s, "language": "mixture", "loss": both - 0.5 + jitter},
                {
                    "experiment": exp,
                    "seed": s,
                    "language": "low",
                    "loss": low + jitter,
                    "top1": top_low + jitter,
                    "recall5": top_low + 0.3 + jitter,
                    "mrr": top_low + 0.1 + jitter,
                },
                {"experiment": exp, "seed": s, "language": "high", "top1": top_high + jitter},
            ]
    return frame(rows)


def verdicts(table):
    return {(r.claim, r.scope, r.metric): r.verdict for r in table.itertuples()}


def test_claims_get_verdicts_from_their_intervals():
    table = claims.build_claims(
        scenario_rows(), single_rows(1.5, 1.7, 3.9, 3.5), bilingual_rows(0.01)
    )
    v = verdicts(table)
    assert v[("C1", "ranks 51-60", "gradient norm (summed)")] == "contradicted"
    assert v[("C1", "ranks 61-65", "gradient norm (summed)")] == "supported"
    assert v[("C2", "ranks 1-10", "validation loss")] == "supported"
    assert v[("C3", "ranks 41-50", "validation loss")] == "supported"
    assert v[("C4", "both languages", "validation loss")] == "supported"
    assert v[("C4", "training mixture", "validation loss")] == "supported"
    assert v[("C5", "low-resource language", "validation loss")] == "supported"  # within margin
    assert v[("C6", "low-resource language", "top-1 accuracy")] == "supported"
    c7 = table[table["claim"] == "C7"].set_index("test")
    assert c7.loc["greater", "verdict"] == "contradicted"  # -0.001 is not "better"
    assert c7.loc["not_worse", "verdict"] == "supported"  # -0.001 > -0.005
    assert c7.loc["greater", "primary"] and not c7.loc["not_worse", "primary"]
    c4 = table[table["claim"] == "C4"].set_index("scope")
    assert c4.loc["training mixture", "primary"] and not c4.loc["both languages", "primary"]
    assert "98/2" in c4.loc["training mixture", "definition"]
    assert (table["definition"] != "").all()  # every claim says how it is measured
    row = table[table["claim"] == "C2"].iloc[0]
    assert (row["A"], row["B"]) == ("HNS", "CE")
    assert row["diff"] == pytest.approx(0.2, abs=1e-3) and row["n_seeds"] == 3
    assert len(table) == 12  # C1 twice, C4 twice, C6 three times, C7 twice


def test_c1_is_evaluated_under_both_share_definitions():
    """With the per-position columns, C1 has one row per definition: here 2.2 is smaller
    than 1 + 2.1 when summed and larger per position (its contributions cancel less)."""
    shares = scenario_rows().assign(
        input_pp=lambda f: f["input"], target_pp=lambda f: f["target"],
        nontarget_pp=lambda f: 10 * f["nontarget"],
    )  # fmt: skip
    table = claims.build_claims(shares, single_rows(1.5, 1.7, 3.9, 3.5), bilingual_rows(0.01))
    c1 = table[(table["claim"] == "C1") & (table["scope"] == "ranks 51-60")]
    by_metric = c1.set_index("metric")
    assert by_metric.loc["gradient norm (summed)", "verdict"] == "contradicted"
    assert by_metric.loc["gradient norm (per-position)", "verdict"] == "supported"
    assert by_metric.loc["gradient norm (summed)", "primary"]
    assert not by_metric.loc["gradient norm (per-position)", "primary"]


def test_contradicted_and_similarity_failures():
    table = claims.build_claims(
        scenario_rows(), single_rows(1.7, 1.5, 3.5, 3.9), bilingual_rows(0.3)
    )
    v = verdicts(table)
    assert v[("C2", "ranks 1-10", "validation loss")] == "contradicted"
    assert v[("C3", "ranks 41-50", "validation loss")] == "contradicted"
    assert v[("C5", "low-resource language", "validation loss")] == "contradicted"


def test_claims_are_saved_as_json(tmp_path):
    table = claims.build_claims(
        scenario_rows(), single_rows(1.5, 1.7, 3.9, 3.5), bilingual_rows(0.01)
    )
    path = claims.save_claims(table, tmp_path)
    data = json.loads(path.read_text())
    assert [r["claim"] for r in data] == table["claim"].tolist()
    assert {"statement", "A_mean", "diff_lo", "verdict", "test", "margin"} <= set(data[0])
    assert claims.save_claims(table, None) is None
    text = claims.readable_claims(table)
    assert text.loc[0, "A"].startswith("2.2 non-target: ")


def test_one_seed_is_inconclusive():
    one = bilingual_rows(0.01)
    one = one[one["seed"] == 0]
    table = claims.build_claims(
        scenario_rows()[lambda f: f["seed"] == 0],
        single_rows(1.5, 1.7, 3.9, 3.5)[lambda f: f["seed"] == 0],
        one,
    )
    assert set(table["verdict"]) == {"inconclusive"}
    assert math.isnan(table["diff_lo"].iloc[0])


def test_bilingual_experiments_and_final_table():
    study = get_profile("smoke")
    configs = bilingual.experiment_configs(study, 2.0)
    assert len(configs) == 4 * len(study.seeds)
    assert configs[("baseline", 0)].p_low == 0.02
    assert configs[("baseline", 0)].objective == CrossEntropy()
    assert configs[("HNS", 0)].objective == HardNegatives(2.0)
    for name in ("low-only HNS", "low-only CE"):
        low = configs[(name, 0)]
        assert low.p_low == 1.0 and low.bilingual


def test_low_only_controls_are_the_originals():
    """The original's control: HNS at layout 2, warmup 2, 160 steps at the paper scale
    (8000 bilingual steps / 50), whatever layout the notebook compares; and CE alike."""
    paper = get_profile("paper")
    configs = bilingual.experiment_configs(paper, 4.0)
    original, ce = configs[("low-only HNS", 0)], configs[("low-only CE", 0)]
    assert original.objective == HardNegatives(2.0)
    assert ce.objective == CrossEntropy()
    for config in (original, ce):
        assert config.max_steps == 160 and config.warmup_steps == 2
        assert config.setting == "low_only"
    assert configs[("baseline", 0)].warmup_steps == paper.optim["warmup_steps"]
    per_seed = bilingual_rows(0.01).assign(recall5=0.5, mrr=0.5, top1=0.5, count=10)
    table, diffs = bilingual.final_table(per_seed)
    assert set(table["experiment"]) == {"baseline", "HNS"}
    both = diffs[(diffs["language"] == "both") & (diffs["metric"] == "loss")].iloc[0]
    assert both["diff"] == pytest.approx(0.1, abs=1e-3)


def test_two_seed_intervals_of_accuracies_stay_in_their_range():
    two = bilingual_rows(0.01)
    two = two[two["seed"] < 2].copy()
    # a spread low-resource top-1: the raw t interval over two seeds reaches below 0
    low = two["language"] == "low"
    two.loc[low & (two["seed"] == 0), "top1"] = 0.01
    two.loc[low & (two["seed"] == 1) & (two["experiment"] == "HNS"), "top1"] = 0.4
    table = claims.build_claims(
        scenario_rows()[lambda f: f["seed"] < 2],
        single_rows(1.5, 1.7, 3.9, 3.5)[lambda f: f["seed"] < 2],
        two,
    )
    row = table[(table["claim"] == "C6") & (table["metric"] == "top-1 accuracy")].iloc[0]
    assert row["A_lo"] == 0.0 and row["B_lo"] == 0.0 and row["intervals_clipped"]
    assert -1.0 <= row["diff_lo"] <= row["diff_hi"] <= 1.0
    assert row["verdict"] == "inconclusive"
    for rec in table.to_dict("records"):
        if rec["metric"] in ("top-1 accuracy", "recall@5", "MRR"):
            assert rec["A_lo"] >= 0.0 and rec["A_hi"] <= 1.0
            assert rec["B_lo"] >= 0.0 and rec["B_hi"] <= 1.0
        if rec["metric"] in ("validation loss", "summed gradient norm"):
            assert rec["A_lo"] >= 0.0 and rec["B_lo"] >= 0.0
    assert "clipped" in claims.styled(table).caption


@pytest.mark.parametrize("profile, marked", [("smoke", True), ("paper", False)])
def test_saved_claims_record_the_profile_and_whether_it_only_checks_the_pipeline(
    tmp_path, profile, marked
):
    table = claims.build_claims(
        scenario_rows(), single_rows(1.5, 1.7, 3.9, 3.5), bilingual_rows(0.01)
    )
    data = json.loads(claims.save_claims(table, tmp_path, profile=profile).read_text())
    assert {r["profile"] for r in data} == {profile}
    assert {r["pipeline_check_only"] for r in data} == {marked}
    assert [r["verdict"] for r in data] == table["verdict"].tolist()  # computed all the same


# --- one pre-registered family, decided together -------------------------------------------------


def test_rows_of_the_primary_table_form_the_family():
    table = claims.build_claims(
        scenario_rows(), single_rows(1.5, 1.7, 3.9, 3.5), bilingual_rows(0.01)
    )
    keys = zip(table["claim"], table["metric"], strict=True)
    family = dict(zip(keys, table["family"], strict=True))
    assert family[("C6", "top-1 accuracy")] == "primary"
    assert family[("C6", "recall@5")] == "exploratory"  # reported beside top-1
    assert family[("C5", "validation loss")] == "exploratory"  # not in the table
    assert family[("C1", "gradient norm (summed)")] == "primary"
    assert set(claims.primary_contrasts()["claim"]) == claims.PRIMARY_IDS
    assert {"C1", "C6", "F1", "F3", "S3", "N1", "N2"} <= claims.PRIMARY_IDS
    for column in ("p_value", "p_signflip", "seeds_needed", "seeds", "test"):
        assert column in table
    assert table.loc[table["claim"] == "C6", "seeds"].iloc[0] == [0, 1, 2]


def test_every_claim_row_states_its_definition():
    a = pd.Series([1.0, 1.1, 1.2], index=[0, 1, 2])
    with pytest.raises(ValueError, match="definition"):
        claims.claim_row("X", "x", "src", "m", "s", "A", a, "B", a * 0)
    row = claims.claim_row("X", "x", "src", "m", "s", "A", a, "B", a * 0, definition="d")
    assert row["family"] == "exploratory" and row["verdict"] == "supported"


def record(claim, p, verdict="supported", family="primary", source="s"):
    return {"claim": claim, "p_value": p, "verdict": verdict, "family": family,
            "source": source}  # fmt: skip


def test_holm_runs_over_the_whole_family_as_merged(tmp_path):
    """Three primary rows from two chapters and one exploratory row: Holm's m is 3, and a
    row that passes alone at 0.04 fails once its family is corrected."""
    rows = claims.family_correction(
        [
            record("C6", 0.01),
            record("F1", 0.04),
            record("N1", 0.30, "inconclusive"),
            record("C5", 0.001, family="exploratory"),
        ]  # fmt: skip
    )
    by = {r["claim"]: r for r in rows}
    assert by["C6"]["p_holm"] == pytest.approx(0.03) and by["C6"]["verdict_holm"] == "supported"
    assert by["F1"]["p_holm"] == pytest.approx(0.08)
    assert by["F1"]["verdict_holm"] == "inconclusive"  # 0.04 alone, 0.08 in its family
    assert by["N1"]["verdict_holm"] == "inconclusive"
    assert by["C5"]["p_holm"] is None and by["C5"]["verdict_holm"] == "supported"
    assert {r["family_size"] for r in rows} == {3}
    # merged across chapters' saves: the second chapter's rows join the first's family
    path = tmp_path / "claims.json"
    path.write_text(json.dumps(claims.merged_claims(path, [record("C6", 0.01, source="04")])))
    assert json.loads(path.read_text())[0]["p_holm"] == pytest.approx(0.01)
    merged = claims.merged_claims(path, [record("F1", 0.02, source="07")])
    assert [r["p_holm"] for r in merged] == pytest.approx([0.02, 0.02])


def test_the_readable_table_shows_test_seeds_and_seeds_needed():
    table = claims.build_claims(
        scenario_rows(), single_rows(1.5, 1.7, 3.9, 3.5), bilingual_rows(0.01)
    )
    text = claims.readable_claims(table)
    for column in ("family", "test", "seeds", "p (t)", "p (sign-flip)", "seeds needed"):
        assert column in text
    decided = text[table["verdict"] != "inconclusive"]
    assert (decided["seeds needed"] == "").all()
    family = claims.family_table(table)
    assert len(family) == (table["family"] == "primary").sum() and "after Holm" in family


def test_load_claims_reads_the_report_or_falls_back(tmp_path):
    table = claims.build_claims(
        scenario_rows(), single_rows(1.5, 1.7, 3.9, 3.5), bilingual_rows(0.01)
    )
    alone = claims.load_claims(None, table)
    assert len(alone) == len(table) and "verdict_holm" in alone[0]
    claims.save_claims(table, tmp_path)
    (tmp_path / "other.json").write_text("[]")
    stored = claims.load_claims(tmp_path)
    assert [r["claim"] for r in stored] == table["claim"].tolist()
    assert stored[0]["family_size"] == (table["family"] == "primary").sum()


def test_the_claims_command_prints_the_corrected_family(tmp_path, capsys):
    from selfish_lib.report.cli import main

    assert main(["claims", "--profile", "smoke", "--reports-dir", str(tmp_path)]) == 1
    assert "no claims in" in capsys.readouterr().err
    table = claims.build_claims(
        scenario_rows(), single_rows(1.5, 1.7, 3.9, 3.5), bilingual_rows(0.01)
    )
    claims.save_claims(table, tmp_path / "smoke", profile="smoke")
    assert main(["claims", "--profile", "smoke", "--reports-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    primary = int((table["family"] == "primary").sum())
    assert f"{primary} primary contrasts" in out and "after Holm" in out
    assert "C5" not in out  # exploratory rows only with --all
    assert main(["claims", "--profile", "smoke", "--reports-dir", str(tmp_path), "--all"]) == 0
    assert "C5" in capsys.readouterr().out


def test_the_claims_command_skips_rows_it_cannot_show(tmp_path, capsys):
    from selfish_lib.report.cli import main

    table = claims.build_claims(
        scenario_rows(), single_rows(1.5, 1.7, 3.9, 3.5), bilingual_rows(0.01)
    )
    claims.save_claims(table, tmp_path / "smoke", profile="smoke")
    path = tmp_path / "smoke" / "claims.json"
    rows = json.loads(path.read_text())
    path.write_text(json.dumps([*rows, {"claim": "Z9", "source": "x", "family": "primary"}]))
    assert main(["claims", "--profile", "smoke", "--reports-dir", str(tmp_path), "--all"]) == 0
    captured = capsys.readouterr()
    assert "lack a claim's fields" in captured.err and "Z9" in captured.err
    assert "C5" in captured.out


def test_a_primary_row_keeps_its_registered_test():
    a = pd.Series([1.0, 1.1, 1.2], index=[0, 1, 2])
    with pytest.raises(ValueError, match="registered not_worse"):
        claims.claim_row("N1", "x", "s", "m", "low", "HNS", a, "CE", a * 0, definition="d")
    row = claims.claim_row("N1", "x", "s", "m", "low", "HNS", a, "CE", a * 0, definition="d",
                           kind="not_worse", margin=0.005)  # fmt: skip
    assert row["family"] == "primary"
    beside = claims.claim_row("N1", "x", "s", "m", "low", "HNS", a, "CE", a * 0,
                              definition="d", primary=False)  # fmt: skip
    assert beside["family"] == "exploratory"  # a row beside the claim may test otherwise
