"""Profiles: the study's sizes as specified, settings mapped to configs, clear errors."""

from __future__ import annotations

import math

import pytest

from selfish_lib.engine.objectives import CrossEntropy, HardNegatives
from selfish_lib.engine.profiles import PROFILE_NAMES, get_profile
from selfish_lib.engine.runs import config_hash
from selfish_lib.engine.validation import ParameterError


def test_paper_profile_is_the_original_study_scale():
    cfg = get_profile("paper").config("single")
    sizes = cfg.model
    assert (sizes.n_layer, sizes.n_head, sizes.n_embd, sizes.block_size) == (4, 4, 128, 64)
    assert (cfg.batch_size, sizes.dropout, cfg.learning_rate, cfg.min_lr) == (12, 0.0, 1e-3, 1e-4)
    assert (cfg.warmup_steps, cfg.beta2, cfg.weight_decay, cfg.grad_clip) == (100, 0.99, 0.1, 1.0)
    assert cfg.max_steps == 2000 and cfg.objective == CrossEntropy()
    assert len(get_profile("paper").seeds) >= 3


def test_every_run_of_a_profile_samples_its_interim_evaluations_alike():
    """The stride reaches every kind of run a chapter trains, and a config at the default
    (every evaluation the whole split) keeps the id it had before the field existed."""
    paper = get_profile("paper")
    configs = [paper.config(s) for s in ("single", "bilingual", "low_only")] + [
        paper.subword_config("bilingual", CrossEntropy(), 1024),
        paper.language_config("nahuatl", "disjoint"),
        paper.sweep_config(HardNegatives(2.0), 0),
        paper.tuning_config("single", CrossEntropy()),
    ]
    assert {c.interim_eval_stride for c in configs} == {paper.interim_eval_stride} == {8}
    # the id of this config before the field existed (pinned with others in
    # test_real_language), and a sampled run under an id of its own
    assert config_hash(paper.config("single", interim_eval_stride=1)) == "1eb4ce6e90bccbfb"
    assert config_hash(paper.config("single")) != "1eb4ce6e90bccbfb"


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_settings_map_to_language_mixes(name):
    profile = get_profile(name)
    single, bi, low = (profile.config(s) for s in ("single", "bilingual", "low_only"))
    assert (single.bilingual, single.p_low) == (False, 0.0)
    assert (bi.bilingual, bi.p_low) == (True, 0.02)
    assert (low.bilingual, low.p_low) == (True, 1.0)
    # the low-resource-only run gets the compute a proportional split would give it
    assert low.max_steps == max(2, bi.max_steps // 50)


def test_overrides_seeds_and_errors():
    profile = get_profile("smoke", seeds=[3, 4])
    assert profile.seeds == (3, 4)
    cfg = profile.config("bilingual", HardNegatives(2.0), seed=4, max_steps=7, n_layer=2)
    assert (cfg.objective.layout, cfg.seed, cfg.max_steps, cfg.model.n_layer) == (2.0, 4, 7, 2)
    assert profile.config("bilingual", layout=2, seed=4, max_steps=7, n_layer=2) == cfg
    with pytest.raises(ParameterError, match="profile='huge'"):
        get_profile("huge")
    with pytest.raises(ParameterError, match="setting"):
        profile.config("trilingual")
    with pytest.raises(ParameterError, match="seeds"):
        get_profile("smoke", seeds=[1, 1])
    with pytest.raises(ParameterError, match="TrainConfig field='colour'"):
        profile.config("single", colour="red")


def test_grid_pairs_every_objective_with_every_seed():
    study = get_profile("smoke", seeds=[0, 3])
    configs = study.grid("single", [CrossEntropy(), HardNegatives(2.0)])
    assert sorted(configs) == [("CE", 0), ("CE", 3), ("HNS", 0), ("HNS", 3)]
    assert configs[("CE", 3)].objective == CrossEntropy()
    assert configs[("HNS", 3)].objective.layout == 2.0
    assert configs[("CE", 0)].replace(layout=2.0) == configs[("HNS", 0)]  # only the objective
    assert set(study.grid("single", [CrossEntropy()], seeds=[7])) == {("CE", 7)}
    with pytest.raises(ParameterError, match="one per arm"):
        study.grid("single", [HardNegatives(1.0), HardNegatives(2.0)])


def test_finite_layout_check_and_study_check():
    from selfish_lib.engine.losses import check_layout
    from selfish_lib.report.pipeline import check_study

    assert check_layout(2.0, finite=True) == 2.0
    with pytest.raises(ParameterError, match="layout=inf"):
        check_layout(math.inf, finite=True)
    assert check_study("smoke", [5], "cpu").seeds == (5,)
    with pytest.raises(ParameterError, match="device"):
        check_study("smoke", None, "gpu")
