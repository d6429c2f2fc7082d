"""CE vs HNS per frequency group, on constructed runs with known answers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

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


def test_group_curve_by_positions_is_a_ratio_of_sums_like_the_tables():
    """Token 0 seen 3 times with mean loss 1, token 1 once with loss 5: the group's
    position-weighted loss is (3 + 5) / 4 = 2, the mean of the symbols' means 3."""
    table = pd.DataFrame(
        {"step": [1, 1], "token": [0, 1], "count": [3, 1], "ce_sum": [3.0, 5.0],
         "objective_sum": [3.0, 5.0]}
    )  # fmt: skip
    runs = {"a": FakeRun(math.inf, 0, table)}
    by_positions = cmp.group_training_curves(runs, INFO, window=1)
    by_tokens = cmp.group_training_curves(runs, INFO, window=1, average="tokens")
    assert by_positions["loss"].iloc[0] == 2.0 and by_tokens["loss"].iloc[0] == 3.0
    with pytest.raises(ValueError, match="average"):
        cmp.group_training_curves(runs, INFO, average="symbols")


def test_group_curve_is_the_mean_of_token_means_then_smoothed():
    table = tokens_table({1: {0: 1.0, 1: 3.0, 2: 5.0}, 2: {0: 3.0, 2: 7.0}})  # token 1 absent
    runs = {"a": FakeRun(math.inf, 0, table)}
    curves = cmp.group_training_curves(runs, INFO, window=2, average="tokens")
    curves = curves.set_index(["group", "step"])
    assert curves.loc[("1-10", 1), "loss"] == 2.0  # mean of 1 and 3
    assert curves.loc[("1-10", 2), "loss"] == pytest.approx((2.0 + 3.0) / 2)  # smoothed
    assert curves.loc[("11-20", 2), "loss"] == pytest.approx(6.0)
    objective = cmp.group_training_curves(runs, INFO, window=1, loss="objective", average="tokens")
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
        text.loc[("61-65 *", "loss"), "CE"] == "n/a"
        and text.loc[("61-65 *", "mrr"), "val positions"] == 0
    )  # a group under 100 validation positions is marked
    assert text.loc[("1-10", "loss"), "after Holm"] == "survives"


def test_holm_marks_survivors_across_every_group_and_metric():
    """Two groups x four metrics: 8 comparisons (the 61-65 rows have no data: NaN p-values,
    not counted); a large consistent loss difference survives, equal ones do not."""
    runs = {}
    for seed, (ce, hns) in enumerate([(2.0, 2.5), (2.1, 2.55), (1.9, 2.45)]):
        runs[("CE", seed)] = FakeRun(math.inf, seed, None, metrics_frame(ce, 0.5))
        runs[("HNS", seed)] = FakeRun(2.0, seed, None, metrics_frame(hns, 0.5))
    table = cmp.validation_table(cmp.group_validation(runs, INFO)).set_index("group")
    assert table.attrs["comparisons"] == 4  # loss, top1, recall5, mrr of 1-10
    assert table.loc["1-10", "holm_loss"] and not table.loc["1-10", "holm_top1"]
    assert table.loc["1-10", "p_top1"] == 1.0  # no difference at all
    assert not table.loc["61-65", "holm_loss"] and table.loc["61-65", "small_group"]


class ConstantModel(torch.nn.Module):
    """Predicts fixed logits whatever the input: known per-position metrics."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.config = SimpleNamespace(block_size=4)
        self.vocab_size = len(logits)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(*idx.shape, -1)


def test_position_bootstrap_interval_covers_the_point_and_is_seeded():
    """Two constant models on the same validation text: the difference on every position
    is known; the bootstrap interval contains it and repeats exactly with its seed."""
    val = torch.tensor([0, 2, 2, 1, 2, 0, 2, 2, 1, 2, 2, 2])
    corpus = SimpleNamespace(val=val)
    ce_logits, hns_logits = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 2.0])

    class Stored:
        def __init__(self, logits):
            self._model = ConstantModel(logits)

        def model(self, device="cpu"):
            return self._model

    runs = {("CE", 0): Stored(ce_logits), ("HNS", 0): Stored(hns_logits)}
    out = cmp.position_bootstrap(runs, corpus, INFO, ["11-20"], n_boot=200)
    row = out.iloc[0]
    # token 2 (group 11-20) follows at 8 positions; log-softmax of each model at token 2
    expected = -torch.log_softmax(hns_logits, 0)[2] + torch.log_softmax(ce_logits, 0)[2]
    assert row["positions"] == 8
    assert row["boot_loss"] == pytest.approx(float(expected))
    assert row["boot_loss_lo"] <= row["boot_loss"] <= row["boot_loss_hi"]
    again = cmp.position_bootstrap(runs, corpus, INFO, ["11-20"], n_boot=200)
    pd.testing.assert_frame_equal(out, again)
