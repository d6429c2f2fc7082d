"""Objectives as data: the registry, validation, labels, canonical forms that keep the run
ids of earlier versions, and a toy objective registered here, trained by the store and
compared beside CE without a change to the library."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F

import selfish_lib.engine.runs as runs
from selfish_lib.engine.objectives import (
    REGISTRY,
    CrossEntropy,
    HardNegatives,
    LossContext,
    Objective,
    make_objective,
    objective_for_layout,
    objective_from_dict,
    register,
)
from selfish_lib.engine.profiles import get_profile
from selfish_lib.engine.runs import config_hash, get_or_train_grid, stack_runs
from selfish_lib.engine.training import TrainConfig
from selfish_lib.engine.validation import ParameterError
from selfish_lib.study import frequency

# Run ids computed by the version before objectives were objects (flat layout fields),
# for profile/setting/layout/seed and two sweep arms: the same experiments keep their ids.
EARLIER_IDS = {
    "smoke/single/inf/0": "48462f394e0fe469",
    "smoke/single/inf/1": "5513aaef117c307a",
    "smoke/single/2.0/0": "5a482ec750a35fd2",
    "smoke/single/2.0/1": "796f13d7afec09a8",
    "smoke/bilingual/inf/0": "e33dd9f92518158b",
    "smoke/bilingual/inf/1": "7175513f7de0787f",
    "smoke/bilingual/2.0/0": "75c6f5df90541ab1",
    "smoke/bilingual/2.0/1": "3605ac242458a892",
    "smoke/low_only/inf/0": "dff5a93760b9beac",
    "smoke/low_only/inf/1": "e1f4b8562d61a998",
    "smoke/low_only/2.0/0": "a0c6a28296696b4f",
    "smoke/low_only/2.0/1": "55cc53f79e193cb5",
    "smoke/sweep/cos": "230a2433a0c5a011",
    "smoke/sweep/3": "78cf27abcf6ee84d",
    "paper/single/inf/0": "a6090fc9718b270a",
    "paper/single/inf/1": "366d42d8a8413024",
    "paper/single/2.0/0": "87d07943c18ed7d9",
    "paper/single/2.0/1": "aea33dfbaa2359b3",
    "paper/bilingual/inf/0": "66e742586f34a732",
    "paper/bilingual/inf/1": "c822dfda1fb89463",
    "paper/bilingual/2.0/0": "1ec0471c96e645e9",
    "paper/bilingual/2.0/1": "3ffdc07b2427bc4c",
    "paper/low_only/inf/0": "fbe6a0aa898ecbd8",
    "paper/low_only/inf/1": "f6bc6fc44e26a52c",
    "paper/low_only/2.0/0": "fbb9d0dbc5d65e29",
    "paper/low_only/2.0/1": "eb8100d8b7b86075",
    "paper/sweep/cos": "9e2418836261781e",
    "paper/sweep/3": "dedeefa6a969afe1",
}


def earlier_config(key: str) -> TrainConfig:
    """The config of ``key`` at the default interim evaluation stride (every evaluation
    the whole split), as configs were before the profiles sampled theirs."""
    profile_name, setting, *rest = key.split("/")
    profile = get_profile(profile_name)
    if setting == "sweep":
        arm = rest[0]
        objective = HardNegatives(8.0, "cosine", 2.0) if arm == "cos" else HardNegatives(3.0)
        config = profile.sweep_config(objective, 0 if arm == "cos" else 1)
    else:
        layout, seed = float(rest[0]), int(rest[1])
        config = profile.config(setting, objective_for_layout(layout), seed=seed)
    return config.replace(interim_eval_stride=1)


@pytest.mark.parametrize("key", sorted(EARLIER_IDS))
def test_run_ids_of_earlier_versions_are_kept(key, monkeypatch):
    # The ids above were computed under numerics version 1; the hashed payload of each
    # config is unchanged, so under that version the ids are the same.
    monkeypatch.setattr(runs, "NUMERICS_VERSION", 1)
    assert config_hash(earlier_config(key)) == EARLIER_IDS[key]


def test_one_experiment_one_id_whatever_the_spelling():
    profile = get_profile("smoke")
    a = profile.config("single", HardNegatives(2), seed=0)
    b = profile.config("single", HardNegatives(2.0), seed=0)
    c = profile.config("single", layout=2.0, seed=0)
    assert config_hash(a) == config_hash(b) == config_hash(c)
    assert config_hash(profile.config("single", bias=1)) == config_hash(profile.config("single"))
    assert config_hash(a) != config_hash(profile.config("single", HardNegatives(2.5), seed=0))


def test_labels_arms_and_round_trip():
    assert CrossEntropy().label == "CE" and CrossEntropy().arm == "CE"
    assert HardNegatives(2.0).label == "HNS(layout=2)"
    assert HardNegatives(8, "cosine", 2).label == "HNS(layout=8→2, cosine)"
    for obj in (CrossEntropy(), HardNegatives(0.5), HardNegatives(8.0, "linear", 1.0)):
        assert objective_from_dict(obj.to_dict()) == obj
    assert make_objective("hns", layout=3) == HardNegatives(3.0)
    assert objective_for_layout(math.inf) == CrossEntropy()
    assert objective_for_layout(2.0) == HardNegatives(2.0)


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda: HardNegatives(-1.0), "layout"),
        (lambda: HardNegatives(math.inf), "layout"),
        (lambda: HardNegatives(float("nan")), "layout"),
        (lambda: HardNegatives("2"), "layout"),
        (lambda: HardNegatives(2.0, "step"), "layout_schedule"),
        (lambda: HardNegatives(2.0, "constant", 1.0), "layout_end"),
        (lambda: HardNegatives(2.0, "linear", math.inf), "layout_end"),
        (lambda: make_objective("nope"), "objective"),
        (lambda: make_objective("hns", margin=2.0), "hns objective"),
        (lambda: objective_from_dict({"layout": 2.0}), "objective"),
        (lambda: TrainConfig(objective="CE"), "objective"),
        (lambda: TrainConfig(objective=Objective()), "objective"),
    ],
)
def test_bad_objectives_name_the_parameter(build, name):
    with pytest.raises(ParameterError) as err:
        build()
    assert err.value.name == name


def test_hns_objective_is_the_hns_loss_and_ce_is_cross_entropy():
    torch.manual_seed(0)
    logits, targets = torch.randn(3, 5, 7), torch.randint(0, 7, (3, 5))
    ctx = LossContext(step=0, max_steps=10)
    ce = CrossEntropy().loss(logits, targets, ctx)
    assert torch.equal(
        ce, F.cross_entropy(logits.view(-1, 7), targets.view(-1), reduction="none").view(3, 5)
    )
    # HNS restricted by hand: drop every logit below target - layout, then plain CE.
    layout = 0.7
    target_logit = logits.gather(-1, targets.unsqueeze(-1))
    by_hand = logits.masked_fill(logits < target_logit - layout, float("-inf"))
    expected = F.cross_entropy(by_hand.view(-1, 7), targets.view(-1), reduction="none").view(3, 5)
    assert torch.allclose(HardNegatives(layout).loss(logits, targets, ctx), expected)
    sched = HardNegatives(10.0, "linear", layout)
    last = LossContext(step=9, max_steps=10)
    assert torch.allclose(sched.loss(logits, targets, last), expected)


@dataclasses.dataclass(frozen=True)
class ScaledCrossEntropy(Objective):
    """A toy objective defined only here: cross-entropy times a factor."""

    factor: float = 0.5
    name: ClassVar[str] = "toy-scaled-ce"
    arm: ClassVar[str] = "TOY"

    def loss(self, logits, targets, context):
        return self.factor * CrossEntropy().loss(logits, targets, context)


def test_a_toy_objective_is_trained_by_the_store_and_compared(tiny_corpus, results_dir):
    register(ScaledCrossEntropy)
    try:
        assert make_objective("toy-scaled-ce", factor=0.25) == ScaledCrossEntropy(0.25)
        profile = get_profile("smoke", seeds=[0, 1])
        grid = profile.grid(
            "single",
            [CrossEntropy(), ScaledCrossEntropy(0.5)],
            max_steps=4,
            eval_interval=2,
            scenario_interval=0,
            n_layer=1,
            n_embd=8,
            n_head=1,
            block_size=8,
            batch_size=2,
            data_sha256=tiny_corpus.sha256,
        )
        runs = get_or_train_grid(grid, corpus=tiny_corpus, results_dir=results_dir, progress=False)
        assert {run.config.objective.label for run in runs.values()} == {"CE", "TOY(factor=0.5)"}
        # the store reads the objective back from config.json
        reloaded = get_or_train_grid(grid, results_dir=results_dir, progress=False)
        assert reloaded[("TOY", 0)].config == grid[("TOY", 0)]
        # the step minimised the toy objective (half the CE of the same logits) ...
        toy = runs[("TOY", 0)].train_log
        assert toy["loss"].tolist() == pytest.approx((0.5 * toy["ce"]).tolist(), rel=1e-6)
        # ... and half the gradient moved the weights elsewhere than CE's, from one start
        toy_w = runs[("TOY", 0)].model().embedding
        ce_w = runs[("CE", 0)].model().embedding
        assert not torch.equal(toy_w, ce_w)
        table = stack_runs(runs, lambda r: r.metrics(tiny_corpus.token_info(), by=["language"]))
        assert set(table["objective"]) == {"CE", "TOY"}
        # notebook 03's per-group comparison takes the new arm as it takes HNS
        info = tiny_corpus.token_info()
        compared = frequency.validation_table(
            frequency.group_validation(runs, info), arm="TOY", reference="CE"
        )
        assert {"TOY_loss", "CE_loss", "diff_loss", "verdict_loss"} <= set(compared.columns)
        readable = frequency.readable_table(compared)
        assert {"TOY", "CE", "TOY − CE", "TOY is"} <= set(readable.columns)
        assert compared["diff_loss"].notna().any()
    finally:
        REGISTRY.pop("toy-scaled-ce", None)
