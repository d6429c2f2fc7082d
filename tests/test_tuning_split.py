"""The tuning split: hyperparameters are chosen on the tail of the training text, never
on the reported validation split, and tuning runs are runs of their own."""

from __future__ import annotations

import json
import random

import pytest
import torch

from selfish_lib.engine.corpus import TUNING_FRACTION, Corpus, sha256_of
from selfish_lib.engine.objectives import CrossEntropy, HardNegatives
from selfish_lib.engine.profiles import get_profile
from selfish_lib.engine.runs import MANIFEST, Run, config_hash, get_or_train
from selfish_lib.engine.training import TrainConfig, train
from selfish_lib.engine.validation import ParameterError


def test_the_tuning_split_is_the_tail_of_the_training_text(corpus):
    tuning = corpus.for_tuning()
    cut = int(len(corpus.train) * (1 - TUNING_FRACTION))
    assert torch.equal(tuning.train, corpus.train[:cut])
    assert torch.equal(tuning.val, corpus.train[cut:])
    assert len(tuning.train) + len(tuning.val) == len(corpus.train)
    # the reported validation split is the text after the training split: never in it
    text_ids = torch.cat([corpus.train, corpus.val])
    assert torch.equal(text_ids[len(corpus.train) :], corpus.val)
    assert tuning.frequencies.equals(corpus.frequencies)  # the same groups
    with pytest.raises(ParameterError, match="fraction"):
        corpus.for_tuning(1.0)


def test_a_tuning_run_never_trains_on_the_tail():
    """A text whose training tail is the only place 'Z' occurs: a tuning run never sees
    'Z' as a target in training (its tail is held out); a reported run does."""
    rng = random.Random(0)
    body = "".join(rng.choice("abc de") for _ in range(8100))
    text = body + "Z" * 900 + "".join(rng.choice("abc de") for _ in range(1000))
    corpus = Corpus.from_text(text)
    z = corpus.tokenizer.encode("Z")[0]
    assert (corpus.train[-900:] == z).all() and not (corpus.val == z).any()
    config = TrainConfig.flat(n_layer=1, n_head=1, n_embd=8, block_size=16, batch_size=16,
                              max_steps=40, warmup_steps=1, eval_interval=40, log_interval=5,
                              data_sha256=corpus.sha256)  # fmt: skip
    tuning = train(config.replace(split="tuning"), corpus, device="cpu", progress=False)
    assert z not in set(tuning.train_tokens["token"])
    assert int(tuning.eval_tokens.query("token == @z")["count"].iloc[-1]) > 0  # scored there
    reported = train(config, corpus, device="cpu", progress=False)
    assert z in set(reported.train_tokens["token"])


def test_tuning_configs_are_their_own_runs_and_validated():
    smoke = get_profile("smoke")
    reported = smoke.config("single", HardNegatives(2.0), 0)
    tuning = smoke.tuning_config("single", HardNegatives(2.0), 0)
    assert tuning.split == "tuning" and tuning.max_steps == smoke.tuning_steps["single"]
    assert tuning.max_steps < reported.max_steps
    same_budget = reported.replace(max_steps=tuning.max_steps, eval_interval=tuning.max_steps)
    assert config_hash(tuning) != config_hash(same_budget)
    assert TrainConfig.from_dict(tuning.to_dict()) == tuning
    paper = get_profile("paper")
    assert paper.tuning_steps == {"single": 500, "bilingual": 2000, "low_only": 40}
    with pytest.raises(ParameterError, match="split"):
        TrainConfig(split="test")


def test_a_tuning_run_is_scored_on_the_tail(corpus):
    config = get_profile("smoke").tuning_config("single", CrossEntropy(), 0)
    result = train(config, corpus, device="cpu", progress=False)
    final = result.eval_tokens[result.eval_tokens["step"] == config.max_steps]
    assert int(final["count"].sum()) == len(corpus.for_tuning().val) - 1
    reported = train(config.replace(split="validation"), corpus, device="cpu", progress=False)
    final = reported.eval_tokens[reported.eval_tokens["step"] == config.max_steps]
    assert int(final["count"].sum()) == len(corpus.val) - 1


def test_runs_stored_before_the_split_field_still_load(corpus, tmp_path):
    """A run whose config.json and manifest were written without the ``split`` field (as
    every version before it wrote them) keeps its id and verifies: configs are compared
    as configs, not as dictionaries."""
    config = get_profile("smoke").config("single", CrossEntropy(), 0, max_steps=4)
    run = get_or_train(config, corpus=corpus, results_dir=tmp_path, device="cpu",
                       progress=False)  # fmt: skip
    body = json.loads((run.path / "config.json").read_text())
    del body["config"]["split"]
    (run.path / "config.json").write_text(json.dumps(body, indent=2))
    manifest = json.loads((run.path / MANIFEST).read_text())
    del manifest["config"]["split"]
    manifest["files"]["config.json"] = {
        "size": (run.path / "config.json").stat().st_size,
        "sha256": sha256_of(run.path / "config.json"),
    }
    (run.path / MANIFEST).write_text(json.dumps(manifest, indent=2))
    again = Run.load(run.path, full=True)
    assert again.config == config and again.id == config_hash(config)
