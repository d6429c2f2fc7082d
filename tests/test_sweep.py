"""The layout sweep on constructed runs with known numbers: parameters, configs, the
sweep table and its paired verdicts, the reading, the explorer's chart, the toy
explainer's gradients and the nucleus helpers (``study.toy``)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from selfish_lib.engine.losses import nucleus_mask
from selfish_lib.engine.objectives import HardNegatives
from selfish_lib.engine.profiles import get_profile
from selfish_lib.engine.training import TrainConfig
from selfish_lib.engine.validation import ParameterError
from selfish_lib.report import charts
from selfish_lib.study import layout as sw
from selfish_lib.study import toy
from selfish_lib.study.readings import POOLED
from selfish_lib.study.stats import mean_ci

INF = math.inf
SEEDS = (0, 1, 2)
INFO = pd.DataFrame(
    {
        "token": [0, 1, 2, 3],
        "display": ["a", "b", "a", "b"],
        "rank": [1, 11, 1, 11],
        "group": ["1-10", "11-20", "1-10", "11-20"],
        "language": ["high", "high", "low", "low"],
    }
)
# Per arm (layout, schedule, end) and seed: low-resource top-1 minus CE's, and overall
# loss minus CE's. CE itself has low top-1 0.10 + 0.01·seed and loss 2.0 + 0.1·seed.
LOW_TOP1_DIFF = {
    (1.0, "constant", INF): [0.09, 0.10, 0.11],  # better: interval above 0
    (2.0, "constant", INF): [-0.05, 0.0, 0.05],  # indistinguishable
    (INF, "constant", INF): [0.0, 0.0, 0.0],
    (8.0, "cosine", 2.0): [-0.031, -0.03, -0.029],  # worse
}
ALL_LOSS_DIFF = {
    (1.0, "constant", INF): [0.19, 0.2, 0.21],  # worse (higher loss)
    (2.0, "constant", INF): [-0.09, -0.1, -0.11],  # better
    (INF, "constant", INF): [0.0, 0.0, 0.0],
    (8.0, "cosine", 2.0): [-0.01, 0.0, 0.01],  # indistinguishable
}


class FakeRun:
    """A real TrainConfig, metrics from the tables above, a small random embedding."""

    def __init__(self, layout: float, schedule: str, end: float, seed: int) -> None:
        self.config = TrainConfig.flat(
            bilingual=True,
            p_low=0.02,
            layout=layout,
            layout_schedule=schedule,
            layout_end=end,
            seed=seed,
        )
        key = (layout, schedule, end)
        self.low_top1 = 0.10 + 0.01 * seed + LOW_TOP1_DIFF[key][seed]
        self.all_loss = 2.0 + 0.1 * seed + ALL_LOSS_DIFF[key][seed]

    def metrics(self, token_info, by):
        by = list(by)
        row = {"count": 100, "recall5": 0.8}
        if by == []:
            return pd.DataFrame(
                [{**row, "count": 200, "loss": self.all_loss, "top1": 0.4, "mrr": 0.5}]
            )
        if by == ["language"]:
            return pd.DataFrame(
                [
                    {
                        "language": "high",
                        **row,
                        "loss": self.all_loss - 0.5,
                        "top1": 0.5,
                        "mrr": 0.6,
                    },
                    {
                        "language": "low",
                        **row,
                        "loss": self.all_loss + 0.5,
                        "top1": self.low_top1,
                        "mrr": self.low_top1 + 0.1,
                    },
                ]
            )[["language", "count", "loss", "top1", "recall5", "mrr"]]
        assert by == ["language", "group"]
        rows = []
        for lang in ("high", "low"):
            for k, group in enumerate(("1-10", "11-20")):
                rows.append(
                    {
                        "language": lang,
                        "group": group,
                        "count": 50,
                        "loss": self.all_loss + k,
                        "top1": 0.3,
                        "recall5": 0.7,
                        "mrr": 0.4,
                    }
                )
        return pd.DataFrame(rows)

    def model(self, device: str = "cpu"):
        g = torch.Generator().manual_seed(self.config.seed)
        return SimpleNamespace(embedding=torch.randn(4, 3, generator=g))


def fake_runs() -> dict:
    """The runs of a sweep over layouts 1, 2, inf and the schedule cosine 8→2, seeds 0-2."""
    return {
        (run.config.objective, seed): run
        for key in LOW_TOP1_DIFF
        for seed in SEEDS
        for run in [FakeRun(*key, seed)]
    }


def fake_tables() -> sw.SweepTables:
    return sw.sweep_tables(fake_runs(), INFO)


# --- parameters ---------------------------------------------------------------------------


def test_check_layouts_sorts_and_requires_ce():
    assert sw.check_layouts([INF, 2, 0.5]) == (0.5, 2.0, INF)
    assert sw.check_layouts(sw.DEFAULT_LAYOUTS)[-1] == INF
    for bad in ([], [1.0, 2.0], [1.0, 1.0, INF], [-1.0, INF], "inf", 3.0, [float("nan"), INF]):
        with pytest.raises(ParameterError, match="layouts"):
            sw.check_layouts(bad)


def test_check_schedule_names_the_parameter_and_what_is_allowed():
    plan = sw.check_schedule(("cosine", 8, 2.0))
    assert plan == sw.Schedule("cosine", 8.0, 2.0) and plan.label == "cosine 8→2"
    assert sw.check_schedule(["linear", 0.5, 4.0]).kind == "linear"
    assert sw.check_schedule(None) is None
    bad = [
        ("constant", 8.0, 2.0),
        ("cosine", 8.0),
        ("cosine", INF, 2.0),
        ("cosine", 2.0, 2.0),
        ("cosine", -1.0, 2.0),
        "cosine",
        ("cosine", "8", 2.0),
    ]
    for schedule in bad:
        with pytest.raises(ParameterError, match=r"invalid schedule=.*'linear' or 'cosine'"):
            sw.check_schedule(schedule)


def test_sweep_configs_cover_the_grid_the_schedule_and_the_sweep_seeds():
    smoke = get_profile("smoke")
    configs = sw.sweep_configs(smoke, [INF, 2.0], ("cosine", 8.0, 2.0))
    seeds = smoke.sweep["seeds"]
    assert len(configs) == 3 * len(seeds)
    assert set(configs) == {
        (arm, s) for arm in ("CE", "HNS(layout=2)", "HNS(layout=8→2, cosine)") for s in seeds
    }
    for config in configs.values():
        assert config.setting == "bilingual" and config.max_steps == smoke.sweep["steps"]
    scheduled = configs[("HNS(layout=8→2, cosine)", seeds[0])]
    assert scheduled.objective == HardNegatives(8.0, "cosine", 2.0)
    assert {s for _, s in sw.sweep_configs(smoke, [INF], None, seeds=[5])} == {5}
    assert sw.sweep_seeds(smoke) == tuple(seeds)
    with pytest.raises(ParameterError, match="seeds"):
        sw.sweep_seeds(smoke, [1, 1])


def test_layout_label_and_arm_fields():
    assert [sw.layout_label(v) for v in (0.5, 2.0, 12.0, INF)] == ["0.5", "2", "12", "∞ (CE)"]
    fields = sw.arm_fields(TrainConfig.flat(layout=8.0, layout_schedule="linear", layout_end=1.0))
    assert fields == {
        "arm": "HNS(layout=8→1, linear)",
        "label": "linear 8→1",
        "schedule": "linear",
        "layout": 8.0,
        "layout_end": 1.0,
    }


# --- tables ---------------------------------------------------------------------------------


def test_sweep_table_means_intervals_and_paired_verdicts():
    tables = fake_tables()
    table = tables.table
    assert table["label"].tolist() == ["1", "2", "∞ (CE)", "cosine 8→2"]
    assert (table["n_seeds"] == 3).all()
    rows = table.set_index("label")
    ce_values = [0.10 + 0.01 * s for s in SEEDS]
    mean, lo, hi, _ = mean_ci(ce_values)
    assert rows.loc["∞ (CE)", ["low_top1", "low_top1_lo", "low_top1_hi"]].tolist() == pytest.approx(
        [mean, lo, hi]
    )
    assert rows.loc["1", "low_top1_diff"] == pytest.approx(0.10)
    _, dlo, dhi, _ = mean_ci(LOW_TOP1_DIFF[(1.0, "constant", INF)])
    assert rows.loc["1", ["low_top1_diff_lo", "low_top1_diff_hi"]].tolist() == pytest.approx(
        [dlo, dhi]
    )
    assert rows["low_top1_vs_ce"].tolist() == ["better", "indistinguishable", "reference", "worse"]
    assert rows[f"{POOLED}_loss_vs_ce"].tolist() == [
        "worse",
        "better",
        "reference",
        "indistinguishable",
    ]
    assert math.isnan(rows.loc["∞ (CE)", "low_top1_diff"])
    # high-resource top-1 is 0.5 everywhere: no difference at all, hence indistinguishable
    assert rows.loc["1", "high_top1"] == pytest.approx(0.5)
    assert rows.loc["1", "high_top1_vs_ce"] == "indistinguishable"
    assert rows.loc["2", "low_mrr"] == pytest.approx(rows.loc["2", "low_top1"] + 0.1)


def test_per_seed_metrics_has_both_languages_and_the_pooled_row():
    per_seed = sw.per_seed_metrics(fake_runs(), INFO)
    assert set(per_seed["language"]) == {"high", "low", POOLED}
    assert len(per_seed) == 4 * 3 * 3
    pooled = per_seed[(per_seed["language"] == POOLED) & (per_seed["arm"] == "CE")]
    assert pooled.sort_values("seed")["loss"].tolist() == pytest.approx([2.0, 2.1, 2.2])


def test_sweep_table_requires_ce():
    per_seed = sw.per_seed_metrics(fake_runs(), INFO)
    with pytest.raises(ParameterError, match="inf"):
        sw.sweep_table(per_seed[per_seed["arm"] != "CE"])


def test_readable_table_and_fragment_are_json_safe():
    tables = fake_tables()
    text = sw.readable_sweep_table(tables.table).set_index("layout")
    assert text.loc["1", "low-resource top-1 (%)"].endswith("] ▲")
    assert text.loc["cosine 8→2", "low-resource top-1 (%)"].endswith("] ▼")
    assert text.loc["2", "low-resource top-1 (%)"].endswith("]")  # indistinguishable
    assert text.loc["1", "overall loss"].endswith("] ▼")  # a higher loss is worse
    assert text.loc["∞ (CE)", "overall loss"].startswith("2.100 [")
    assert list(text.columns) == [
        "seeds",
        "low-resource top-1 (%)",
        "low-resource MRR (%)",
        "low-resource loss",
        "high-resource top-1 (%)",
        "overall loss",
    ]
    records = sw.fragment_table(tables.table)
    assert [r["label"] for r in records] == ["1", "2", "∞ (CE)", "cosine 8→2"]
    assert {"low_top1", "low_top1_lo", "low_top1_hi", sw.POOLED_LOSS} <= set(records[0])
    assert f"{sw.POOLED_LOSS}_vs_ce" in records[0]
    from selfish_lib.engine.files import jsonable as _jsonable

    json.dumps(_jsonable(records), allow_nan=False)


def test_reading_names_the_best_layout_and_the_verdicts():
    tables = fake_tables()
    reading = sw.sweep_reading(tables.per_seed, tables.table)
    best = reading.summary["best_low_top1"]
    assert best["layout"] == "1" and best["verdict"] == "better"
    assert best["diff_vs_ce"] == pytest.approx(0.10)
    assert reading.summary["low_top1_better_than_ce"] == ["1"]
    assert reading.summary["low_top1_worse_than_ce"] == ["cosine 8→2"]
    assert reading.summary[f"{sw.POOLED_LOSS}_lowest"] == "2"
    assert reading.summary[f"{sw.POOLED_LOSS}_worse_than_ce"] == ["1"]
    # 2.3 at layout 1, 2.0 at layout 2, 2.1 for CE: not monotone
    assert reading.summary[f"{sw.POOLED_LOSS}_trend"] == "does not move monotonically"
    schedule = reading.summary["schedule"]
    assert schedule["best_constant"] == "1" and schedule["verdict_vs_best_constant"] == "worse"
    assert "layout **1**" in reading.text and "better than CE" in reading.text
    assert "Schedule cosine 8→2" in reading.text


def test_tables_pick_the_arm_shown_by_the_explorer():
    tables = fake_tables()
    assert tables.layouts == [1.0, 2.0, INF]
    assert tables.schedules == ["constant", "cosine"]
    assert tables.arm(2.0) == "HNS(layout=2)"
    assert tables.arm(INF) == "CE"
    assert tables.arm(2.0, "cosine") == "HNS(layout=8→2, cosine)"
    with pytest.raises(ParameterError, match="layout=3.0"):
        tables.arm(3.0)
    with pytest.raises(ParameterError, match="schedule"):
        tables.arm(2.0, "linear")


def test_embedding_projections_one_seed_per_arm():
    emb = sw.embedding_projections(fake_runs(), INFO)
    assert set(emb["seed"]) == {0}
    assert len(emb) == 4 * len(INFO)
    assert {"pc1", "pc2", "display", "language", "rank", "group", "arm"} <= set(emb.columns)
    assert set(sw.embedding_projections(fake_runs(), INFO, seed=2)["seed"]) == {2}
    with pytest.raises(ParameterError, match="seed"):
        sw.embedding_projections(fake_runs(), INFO, seed=9)


def datasets(spec: dict) -> list[dict]:
    return [row for rows in spec["datasets"].values() for row in rows]


def test_explorer_chart_highlights_the_chosen_layout():
    tables = fake_tables()
    spec = charts.chart_spec(charts.layout_explorer_chart(tables, 2.0))
    assert spec["title"]["text"] == "Layout sweep, chosen: 2"
    chosen = {row["label"] for row in datasets(spec) if row.get("chosen")}
    assert chosen == {"2"}
    shown = {row["arm"] for row in datasets(spec) if "pc1" in row}
    assert shown == {"HNS(layout=2)", "CE"}  # its embeddings beside CE's
    spec = charts.chart_spec(charts.layout_explorer_chart(tables, 2.0, "cosine"))
    assert spec["title"]["text"] == "Layout sweep, chosen: cosine 8→2"
    assert {row["label"] for row in datasets(spec) if row.get("chosen")} == {"cosine 8→2"}


# --- the toy explainer ----------------------------------------------------------------------


@pytest.mark.parametrize("layout", [0.0, 0.75, 2.0, 3.3, 10.0, INF])
def test_toy_gradients_are_zero_when_excluded_and_softmax_minus_onehot_when_kept(layout):
    example = toy.toy_example()
    table = toy.toy_gradients(example, layout)
    z = torch.tensor(example.logits, dtype=torch.float64)
    gap = z - z[example.target]
    excluded = (gap < -layout).numpy()
    assert table["excluded"].tolist() == excluded.tolist()
    assert (table.loc[table["excluded"], "grad"] == 0.0).all()  # exactly zero
    kept_p = torch.where(torch.from_numpy(~excluded), z, torch.tensor(-INF)).softmax(-1)
    onehot = torch.nn.functional.one_hot(torch.tensor(example.target), len(z)).double()
    expected = (kept_p - onehot).numpy()
    np.testing.assert_allclose(table["grad"], expected, atol=1e-12)
    np.testing.assert_allclose(table["grad_ce"], (z.softmax(-1) - onehot).numpy(), atol=1e-12)
    assert table["grad"].sum() == pytest.approx(0.0, abs=1e-12)


def test_toy_example_excludes_tokens_one_by_one_as_the_layout_shrinks():
    example = toy.toy_example()
    counts = [int(toy.toy_gradients(example, v)["excluded"].sum()) for v in (6.0, 4.0, 2.0, 0.0)]
    assert counts == sorted(counts) and counts[0] == 0 and counts[-1] == len(example.logits) - 2
    with pytest.raises(ParameterError, match="target"):
        toy.ToyLogits((1.0, 2.0), 2, ("a", "b"))
    with pytest.raises(ParameterError, match="layout"):
        toy.toy_gradients(example, -1.0)


def test_toy_chart_draws_the_cut_only_for_a_finite_layout():
    example = toy.toy_example()
    spec = charts.chart_spec(charts.toy_gradient_chart(toy.toy_gradients(example, 2.0), 2.0))
    cuts = [row for row in datasets(spec) if "cut" in row]
    assert cuts and cuts[0]["cut"] == pytest.approx(example.logits[example.target] - 2.0)
    spec = charts.chart_spec(charts.toy_gradient_chart(toy.toy_gradients(example, INF), INF))
    assert not [row for row in datasets(spec) if "cut" in row]
    statuses = {row["status"] for row in datasets(spec) if "status" in row}
    assert statuses == {"target", "kept (hard negative)"}


# --- nucleus helpers ------------------------------------------------------------------------


def test_nucleus_is_the_shortest_prefix_reaching_top_p():
    probs = torch.tensor([[0.1, 0.5, 0.3, 0.1], [0.25, 0.25, 0.25, 0.25]], dtype=torch.float64)
    mask = nucleus_mask(probs, 0.7)
    assert mask[0].tolist() == [False, True, True, False]  # 0.5 + 0.3 >= 0.7
    assert int(mask[1].sum()) == 3  # three of four tied tokens, whichever they are
    assert nucleus_mask(probs, 0.8)[0].tolist() == [False, True, True, False]  # exactly 0.8
    g = torch.Generator().manual_seed(0)
    p = torch.randn(50, 9, generator=g, dtype=torch.float64).mul(2).softmax(-1)
    for row, m in zip(p, nucleus_mask(p, 0.9), strict=True):
        kept = row[m]
        assert kept.sum() >= 0.9 - 1e-12
        assert kept.sum() - kept.min() < 0.9  # no shorter prefix reaches top_p
        assert kept.min() >= row[~m].max() if (~m).any() else True


def test_nucleus_margin_text():
    text = toy.nucleus_margin_text(130, 0.9, [2.0, 8.0, 12.0, INF])
    assert f"**{math.log(130) + math.log(10):.3f}**" in text
    assert "8, 12, ∞ (CE)" in text
    assert "Cannot compute" in toy.nucleus_margin_text(1, 0.9)
    assert "top_p" in toy.nucleus_margin_text(65, 1.0)


def test_shown_layout_must_be_swept_and_safe_layouts_follow_the_margin():
    assert sw.check_shown_layout(2, [1.0, 2.0, INF]) == 2.0
    for bad in (3.0, -1.0, "2"):
        with pytest.raises(ParameterError, match=r"invalid layout=.*one of the swept layouts"):
            sw.check_shown_layout(bad, [1.0, 2.0, INF])
    margin = math.log(130) - math.log(0.1)
    assert toy.nucleus_safe_layouts([2.0, margin, 8.0, INF], 130, 0.9) == [margin, 8.0, INF]
    assert toy.TOY_LAYOUTS[0] == 0.0 and toy.TOY_LAYOUTS[-1] == INF


def test_a_sweep_without_a_schedule_reads_and_draws():
    runs = {k: r for k, r in fake_runs().items() if "→" not in r.config.objective.label}
    tables = sw.sweep_tables(runs, INFO)
    assert tables.schedules == ["constant"]
    reading = sw.sweep_reading(tables.per_seed, tables.table)
    assert "schedule" not in reading.summary and "Schedule" not in reading.text
    spec = charts.chart_spec(charts.layout_explorer_chart(tables, 1.0))
    assert "scheduled run" not in spec["title"]["subtitle"]
    assert {row["label"] for row in datasets(spec) if row.get("chosen")} == {"1"}
