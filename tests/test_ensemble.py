"""Ensembles (engine.ensemble): E runs of one shape trained as one batched model give
each run's solo numbers within a stated tolerance, deterministically, and the store
serves them under their solo ids.

The tolerance: on the smoke profile (30 steps), every member's final validation loss
and every per-frequency-group metric (loss, top-1, recall@5, MRR) is within
``TOLERANCE`` of its solo run's. A batched matrix product may add in another order
than a single one; at one CPU thread the forward pass is measured bit-identical, and
the training trajectories differ by rounding only (after 30 steps: weights within
about 3e-6, logged losses and final metrics within about 1e-6). The other kinds of
runs (every registered objective, untied embeddings, dropout) are in
``tests/test_ensemble_kinds.py``.
"""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from selfish_lib.engine.ensemble import (
    StackedGPT,
    check_group,
    ensemble_groups,
    group_key,
    train_ensemble,
)
from selfish_lib.engine.evaluation import aggregate
from selfish_lib.engine.executors import train_all
from selfish_lib.engine.objectives import CrossEntropy, HardNegatives, LossContext
from selfish_lib.engine.profiles import get_profile
from selfish_lib.engine.runs import config_hash, get_or_train, get_or_train_group
from selfish_lib.engine.training import (
    CHECKPOINT,
    cpu_training_threads,
    initial_model,
    logged_tables,
    make_optimizer,
    train,
    training_step,
)
from selfish_lib.engine.validation import ParameterError

TOLERANCE = 1e-5
SMOKE = get_profile("smoke")
ARMS = (CrossEntropy(), HardNegatives(layout=0.5))  # layout 0.5 excludes logits at smoke scale


def _group(setting: str = "single", **overrides):
    return [SMOKE.config(setting, arm, seed, **overrides) for arm in ARMS for seed in (0, 1)]


def _final_metrics(result, corpus) -> pd.DataFrame:
    """Final validation metrics per frequency group (one language) or per language."""
    final = result.eval_tokens[result.eval_tokens["step"] == result.eval_tokens["step"].max()]
    bilingual = result.model.vocab_size > corpus.vocab_size
    by = ["language"] if bilingual else ["group"]
    info = corpus.token_info(bilingual)
    return aggregate(final.drop(columns="step"), info, by=by).set_index(by)


@pytest.fixture(scope="module")
def solo_and_ensemble(corpus):
    configs = _group()
    solo = [train(c, corpus, device="cpu", progress=False) for c in configs]
    together = train_ensemble(configs, corpus, device="cpu", progress=False)
    return configs, solo, together


def test_stacked_forward_equals_each_solo_forward(corpus):
    configs = _group() + [SMOKE.config("single", CrossEntropy(), 2, bias=False)]
    for chosen in (configs[:4], configs[4:]):
        models = [initial_model(c, corpus.vocab_size) for c in chosen]
        stacked = StackedGPT(models)
        x = torch.randint(0, corpus.vocab_size, (len(chosen), 3, SMOKE.model.block_size))
        with cpu_training_threads(torch.device("cpu")):
            logits, _ = stacked.forward(x)
            for e, model in enumerate(models):
                torch.testing.assert_close(logits[e], model(x[e]), rtol=0, atol=1e-6)


def test_each_member_gets_its_own_gradient_and_clipping(corpus):
    """One backward of the summed member losses gives each member its solo gradient;
    clipping takes each member's own norm (as clip_grad_norm_ on its solo model)."""
    configs = _group()
    models = [initial_model(c, corpus.vocab_size) for c in configs]
    stacked = StackedGPT(models)
    x = torch.randint(0, corpus.vocab_size, (len(configs), 4, SMOKE.model.block_size))
    y = torch.randint(0, corpus.vocab_size, x.shape)
    logits, _ = stacked.forward(x)
    losses = [
        c.objective.loss(logits[e], y[e], LossContext(max_steps=c.max_steps)).mean()
        for e, c in enumerate(configs)
    ]
    torch.stack(losses).sum().backward()
    max_norm = 0.05  # small enough that every member is clipped
    norms = stacked.clip_gradients(max_norm)
    for e, (config, model) in enumerate(zip(configs, models, strict=True)):
        per_pos = config.objective.loss(model(x[e]), y[e], LossContext(max_steps=config.max_steps))
        per_pos.mean().backward()
        solo_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        torch.testing.assert_close(norms[e], solo_norm, rtol=1e-5, atol=0)
        for name, p in model.named_parameters():
            torch.testing.assert_close(stacked.params[name].grad[e], p.grad, rtol=1e-4, atol=1e-7)


def test_ensemble_matches_solo_runs_within_the_tolerance(solo_and_ensemble, corpus):
    configs, solo, together = solo_and_ensemble
    for config, a, b in zip(configs, solo, together, strict=True):
        fa, fb = _final_metrics(a, corpus), _final_metrics(b, corpus)
        for metric in ("loss", "top1", "recall5", "mrr"):
            gap = (fa[metric] - fb[metric]).abs().max()
            assert gap <= TOLERANCE, (config.objective.label, config.seed, metric, gap)
        pd.testing.assert_series_equal(a.train_log["step"], b.train_log["step"])
        assert (a.train_log["loss"] - b.train_log["loss"]).abs().max() <= TOLERANCE
        assert (a.train_tokens[["step", "token", "count"]]).equals(
            b.train_tokens[["step", "token", "count"]]
        )  # the same data stream: the same tokens at the same steps
        for name, p in a.model.state_dict().items():
            torch.testing.assert_close(b.model.state_dict()[name], p, rtol=0, atol=1e-5)


def test_members_score_the_windows_their_solo_runs_score(solo_and_ensemble, corpus):
    """The smoke profile samples every 4th window before the last evaluation: each member
    scores the same positions as its solo run at every evaluation, all of them at the end."""
    configs, solo, together = solo_and_ensemble
    assert configs[0].interim_eval_stride > 1
    for a, b in zip(solo, together, strict=True):
        counts = [r.eval_tokens.groupby("step")["count"].sum() for r in (a, b)]
        pd.testing.assert_series_equal(*counts)
        last = counts[0].index.max()
        assert counts[0].loc[last] == len(corpus.val) - 1
        assert (counts[0].drop(last) < counts[0].loc[last]).all()


def test_the_arms_really_differ(solo_and_ensemble):
    """The group mixes objectives that train differently (else the test shows little)."""
    _, solo, _ = solo_and_ensemble
    ce, hns = solo[0].train_log["loss"], solo[2].train_log["loss"]
    assert (ce - hns).abs().max() > 1e-3


def test_scenario_log_matches_solo(solo_and_ensemble):
    configs, solo, together = solo_and_ensemble
    assert configs[0].scenario_interval > 0
    for a, b in zip(solo, together, strict=True):
        assert len(a.scenarios) == len(b.scenarios) > 0
        cols = ["input", "target", "nontarget", "grad_total", "update_adam", "update_total"]
        torch.testing.assert_close(
            torch.tensor(b.scenarios[cols].to_numpy()),
            torch.tensor(a.scenarios[cols].to_numpy()),
            rtol=1e-3,
            atol=1e-7,
        )
        assert b.scenarios["residual"].max() < 1e-5  # the decomposition stays exact


def test_an_ensemble_is_deterministic(solo_and_ensemble, corpus):
    configs, _, together = solo_and_ensemble
    again = train_ensemble(configs, corpus, device="cpu", progress=False)
    for a, b in zip(together, again, strict=True):
        for name, p in a.model.state_dict().items():
            assert torch.equal(p, b.model.state_dict()[name]), name
        pd.testing.assert_frame_equal(a.eval_tokens, b.eval_tokens)
        pd.testing.assert_frame_equal(a.train_log, b.train_log)


def test_bilingual_ensemble_matches_solo(corpus):
    configs = [SMOKE.config("bilingual", arm, 0, max_steps=20) for arm in ARMS]
    solo = [train(c, corpus, device="cpu", progress=False) for c in configs]
    together = train_ensemble(configs, corpus, device="cpu", progress=False)
    for a, b in zip(solo, together, strict=True):
        fa, fb = _final_metrics(a, corpus), _final_metrics(b, corpus)
        assert (fa["loss"] - fb["loss"]).abs().max() <= TOLERANCE
        assert len(fa) == 2  # both languages scored


def test_a_member_checkpoint_resumes_as_a_solo_run(corpus, tmp_path):
    """Each member writes the checkpoint its solo run would write: training it alone
    from there finishes the same run (within the tolerance)."""
    configs = _group()[:2]
    folders = [tmp_path / str(i) for i in range(2)]
    together = train_ensemble(configs, corpus, folders, device="cpu", progress=False)
    state = torch.load(folders[1] / CHECKPOINT, weights_only=False)
    step = state["step"]
    assert 0 < step < configs[1].max_steps
    # the checkpoint holds state only; the member's rows up to it are in its own logs
    assert not {"train_log", "scenarios", "eval_tokens"} & set(state)
    covered = logged_tables(folders[1], state)
    for name in ("train_log", "train_tokens", "eval_tokens", "scenarios"):
        mine = getattr(together[1], name)
        assert covered[name].equals(mine[mine["step"] <= step].reset_index(drop=True)), name
    resumed = train(configs[1], corpus, folders[1], device="cpu", progress=False)
    assert list(resumed.train_log["step"]) == list(together[1].train_log["step"])
    early = together[1].train_tokens["step"] <= step  # rows the resumed run took over
    assert resumed.train_tokens[early].equals(together[1].train_tokens[early])
    for name, p in together[1].model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], p, rtol=0, atol=1e-5)


def test_the_store_serves_ensemble_runs_under_their_solo_ids(corpus, tmp_path):
    configs = _group()[:3]
    done_alone = get_or_train(configs[0], corpus=corpus, results_dir=tmp_path, device="cpu",
                              progress=False)  # fmt: skip
    runs = get_or_train_group(configs, corpus=corpus, results_dir=tmp_path, device="cpu",
                              progress=False)  # fmt: skip
    assert [r.id for r in runs] == [config_hash(c) for c in configs]
    assert [r.trained_now for r in runs] == [False, True, True]
    assert runs[0].path == done_alone.path
    executions = [
        json.loads((r.path / "config.json").read_text())["meta"]["execution"] for r in runs
    ]
    assert executions[0] == {"executor": "solo"}
    assert executions[1:] == [
        {"executor": "ensemble", "members": 2, "member": 0},
        {"executor": "ensemble", "members": 2, "member": 1},
    ]
    again = get_or_train_group(configs, corpus=corpus, results_dir=tmp_path, device="cpu",
                               progress=False)  # fmt: skip
    assert not any(r.trained_now for r in again)
    assert not list((tmp_path / "runs").glob(".*.partial"))


def test_groups_follow_shapes_and_size():
    """Seeds, objectives and dropout rates share a group; anything that changes a tensor's
    shape or the schedule (steps, tying, width) does not."""
    configs = _group()
    longer = SMOKE.config("single", CrossEntropy(), 0, max_steps=40)
    dropout = SMOKE.config("single", CrossEntropy(), 3, dropout=0.1)
    untied = SMOKE.config("single", CrossEntropy(), 0, tie_embeddings=False)
    groups = ensemble_groups([*configs, longer, dropout, untied], 3)
    assert groups == [tuple(configs[:3]), (configs[3], dropout), (longer,), (untied,)]
    assert ensemble_groups(configs, 1) == [(c,) for c in configs]
    assert group_key(dropout) == group_key(configs[0]) == group_key(configs[3])
    for other in (longer, untied, SMOKE.config("single", CrossEntropy(), 0, n_embd=16)):
        assert group_key(configs[0]) != group_key(other)


@pytest.mark.parametrize(
    "members",
    [
        [],
        [SMOKE.config("single", CrossEntropy(), 0), SMOKE.config("single", CrossEntropy(), 0)],
        [SMOKE.config("single", CrossEntropy(), 0), SMOKE.config("bilingual", CrossEntropy(), 0)],
        [
            SMOKE.config("single", CrossEntropy(), 0),
            SMOKE.config("single", CrossEntropy(), 1, tie_embeddings=False),
        ],
    ],
    ids=["empty", "repeated", "two-shapes", "tied-and-untied"],
)
def test_bad_groups_are_refused(members):
    with pytest.raises(ParameterError, match="configs"):
        check_group(members)


def test_ensemble_size_is_validated():
    with pytest.raises(ParameterError, match="ensemble"):
        ensemble_groups(_group(), 0)


def test_member_step_equals_training_step(corpus):
    """One batched step moves each member's weights as ``training_step`` moves its solo
    model's (AdamW over stacked tensors is one AdamW per member)."""
    configs = _group()[:2]
    models = [initial_model(c, corpus.vocab_size) for c in configs]
    stacked = StackedGPT(models)
    optimizer = stacked.optimizer(configs[0])
    x = torch.randint(0, corpus.vocab_size, (2, 4, SMOKE.model.block_size))
    y = torch.randint(0, corpus.vocab_size, x.shape)
    logits, _ = stacked.forward(x)
    loss = sum(F.cross_entropy(logits[e].reshape(-1, logits.size(-1)), y[e].reshape(-1))
               for e in range(2))  # fmt: skip
    for group in optimizer.param_groups:
        group["lr"] = 1e-3
    optimizer.zero_grad()
    loss.backward()
    stacked.clip_gradients(configs[0].grad_clip)
    optimizer.step()
    for e, model in enumerate(models):
        solo = dataclasses.replace(configs[e], objective=CrossEntropy())
        training_step(model, make_optimizer(model, solo), x[e], y[e], solo, 1e-3)
        for name, p in model.named_parameters():
            torch.testing.assert_close(stacked.params[name][e].detach(), p.detach(), rtol=0,
                                       atol=1e-6)  # fmt: skip


def test_train_all_groups_runs_into_ensembles(corpus, tmp_path):
    """``train_all(ensemble=N)``: runs of one shape in groups of up to N, the others alone,
    every run under its solo id; ``jobs=2`` sends whole groups to the workers."""
    configs = _group()[:3] + [SMOKE.config("single", CrossEntropy(), 0, max_steps=12)]
    done = train_all(configs, results_dir=tmp_path, corpus=corpus, device="cpu", ensemble=2,
                     jobs=2, progress=False)  # fmt: skip
    assert [t.id for t in done] == [config_hash(c) for c in configs]
    assert all(t.trained_now for t in done)
    meta = [json.loads((tmp_path / "runs" / t.id / "config.json").read_text())["meta"]
            for t in done]  # fmt: skip
    assert [m["execution"] for m in meta] == [
        {"executor": "ensemble", "members": 2, "member": 0},
        {"executor": "ensemble", "members": 2, "member": 1},
        {"executor": "solo"},
        {"executor": "solo"},
    ]
