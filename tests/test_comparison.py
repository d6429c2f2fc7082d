"""CE vs HNS per frequency group, on constructed runs with known answers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from selfish_lib.study import frequency as cmp

INFO = pd.DataFrame({"token": [0, 1, 2], "group": ["1-10", "1-10", "11-20"], "language": "high"})


class FakeRun:
    """Just the tables and config fields the comparison reads."""

    def __init__(self, layout: float, seed: int, train_tokens: pd.DataFrame, metrics=None):
        arm = "CE" if math.isinf(layout) else "HNS"
        self.config = SimpleNamespace(objective=SimpleNamespace(arm=arm), seed=seed)
        self.train_tokens = train_tokens
        self._metrics = metrics

    def metrics(self, token_info, by):
        return self._metrics


def tokens_table(losses_by_step: dict[int, dict[int, float]]) -> pd.DataFrame:
    rows = []
    for step, per_token in losses_by_step.items():
        for token, loss in per_token.items():
            rows.append(
                {
                    "step": step,
                    "token": token,
                    "count": 2,
                    "ce_sum": 2 * loss,
                    "objective_sum": loss,
                }
            )
    return pd.DataFrame(rows)


def test_group_curve_is_the_mean_of_token_means_then_smoothed():
    table = tokens_table({1: {0: 1.0, 1: 3.0, 2: 5.0}, 2: {0: 3.0, 2: 7.0}})  # token 1 absent
    runs = {"a": FakeRun(math.inf, 0, table)}
    curves = cmp.group_training_curves(runs, INFO, window=2).set_index(["group", "step"])
    assert curves.loc[("1-10", 1), "loss"] == 2.0  # mean of 1 and 3
    assert curves.loc[("1-10", 2), "loss"] == pytest.approx((2.0 + 3.0) / 2)  # smoothed
    assert curves.loc[("11-20", 2), "loss"] == pytest.approx(6.0)
    objective = cmp.group_training_curves(runs, INFO, window=1, loss="objective")
    assert objective.set_index(["group", "step"]).loc[("1-10", 1), "loss"] == 1.0
    with pytest.raises(ValueError, match="window"):
        cmp.group_training_curves(runs, INFO, window=0)


def metrics_frame(loss: float, top1: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "language": ["high", "high"],
            "group": ["1-10", "61-65"],
            "count": [100, 0],
            "loss": [loss, math.nan],
            "top1": [top1, math.nan],
            "recall5": [0.9, math.nan],
            "mrr": [0.7, math.nan],
        }
    )


def test_validation_table_differences_and_verdicts():
    runs = {}
    for seed, (ce, hns) in enumerate([(2.0, 2.5), (2.1, 2.55), (1.9, 2.45)]):
        runs[("CE", seed)] = FakeRun(math.inf, seed, None, metrics_frame(ce, 0.5))
        runs[("HNS", seed)] = FakeRun(2.0, seed, None, metrics_frame(hns, 0.6 + 0.01 * seed))
    table = cmp.validation_table(cmp.group_validation(runs, INFO)).set_index("group")
    frequent = table.loc["1-10"]
    assert frequent["count"] == 100
    assert frequent["CE_loss"] == pytest.approx(2.0)
    assert frequent["diff_loss"] == pytest.approx(0.5)
    assert frequent["verdict_loss"] == "worse" and frequent["verdict_top1"] == "better"
    rare = table.loc["61-65"]  # no validation tokens: a count of 0 and NaN, never a number
    assert rare["count"] == 0 and np.isnan(rare["CE_loss"]) and np.isnan(rare["diff_loss"])
    assert rare["verdict_loss"] == "indistinguishable"
    assert table.attrs["n_seeds"] == {"CE": 3, "HNS": 3}


def test_verdict_direction_depends_on_the_metric():
    assert cmp.verdict("loss", -0.2, -0.1) == "better"
    assert cmp.verdict("top1", -0.2, -0.1) == "worse"
    assert cmp.verdict("mrr", -0.2, 0.1) == "indistinguishable"


def test_reading_lists_groups_by_verdict():
    runs = {}
    for seed, (ce, hns) in enumerate([(2.0, 1.5), (2.1, 1.55), (1.9, 1.45)]):
        runs[("CE", seed)] = FakeRun(math.inf, seed, None, metrics_frame(ce, 0.5))
        runs[("HNS", seed)] = FakeRun(2.0, seed, None, metrics_frame(hns, 0.5))
    table = cmp.validation_table(cmp.group_validation(runs, INFO))
    train_final = pd.DataFrame(
        {
            "objective": ["CE"] * 3 + ["HNS"] * 3,
            "seed": [0, 1, 2] * 2,
            "language": "high",
            "group": "1-10",
            "loss": [1.0, 1.1, 0.9, 1.2, 1.3, 1.15],
        }
    )
    out = cmp.group_reading(train_final, table)
    assert out.summary["training_loss"]["1-10"]["verdict"] == "worse"
    assert out.summary["validation"]["1-10"]["loss"]["verdict"] == "better"
    assert "validation loss**, HNS is better for 1-10" in out.text


def test_readable_table_has_one_row_per_group_and_metric():
    runs = {}
    for seed, (ce, hns) in enumerate([(2.0, 2.5), (2.1, 2.55), (1.9, 2.45)]):
        runs[("CE", seed)] = FakeRun(math.inf, seed, None, metrics_frame(ce, 0.5))
        runs[("HNS", seed)] = FakeRun(2.0, seed, None, metrics_frame(hns, 0.5))
    table = cmp.validation_table(cmp.group_validation(runs, INFO))
    text = cmp.readable_table(table).set_index(["group", "metric"])
    assert len(text) == 2 * 4
    assert text.loc[("1-10", "loss"), "CE"].startswith("2.000 [")
    assert text.loc[("1-10", "loss"), "HNS − CE"].startswith("+0.500")
    assert text.loc[("1-10", "loss"), "HNS is"] == "worse"
    assert (
        text.loc[("61-65", "loss"), "CE"] == "n/a" and text.loc[("61-65", "mrr"), "val tokens"] == 0
    )
