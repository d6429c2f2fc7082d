"""TrainConfig validation, the schedule, the optimizer groups, determinism and exact resume."""

from __future__ import annotations

import json
import math

import pytest
import torch

from selfish_lib.engine.model import GPT, ModelConfig
from selfish_lib.engine.objectives import HardNegatives
from selfish_lib.engine.training import (
    TokenLossLog,
    TrainConfig,
    learning_rate,
    make_optimizer,
    resolve_device,
    train,
)


def tiny_config(corpus, **changes) -> TrainConfig:
    base = TrainConfig.flat(
        n_layer=1,
        n_head=2,
        n_embd=16,
        block_size=16,
        batch_size=4,
        max_steps=12,
        warmup_steps=3,
        eval_interval=6,
        log_interval=3,
        checkpoint_interval=4,
        data_sha256=corpus.sha256,
    )
    return base.replace(**changes)


def states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    "field, value",
    [
        ("n_layer", 0),
        ("n_embd", 30),
        ("dropout", 1.5),
        ("batch_size", 0),
        ("learning_rate", -1.0),
        ("min_lr", 1.0),
        ("beta2", 2.0),
        ("layout", -1.0),
        ("layout", float("nan")),
        ("p_low", 0.5),
        ("seed", -1),
        ("eval_interval", 0),
        ("bilingual", "yes"),
    ],
)
def test_invalid_config_names_the_parameter(field, value):
    with pytest.raises(ValueError) as err:
        TrainConfig.flat(**{field: value})
    name = "n_embd" if field == "n_embd" else field
    assert name in str(err.value)
    assert repr(value) in str(err.value) or str(value) in str(err.value)


def test_config_round_trips_through_dict_with_inf():
    cfg = TrainConfig.flat(bilingual=True, p_low=0.02, layout=math.inf, grad_clip=math.inf)
    data = cfg.to_dict()
    assert data["grad_clip"] == "inf" and data["objective"] == {"name": "ce"}
    assert TrainConfig.from_dict(json.loads(json.dumps(data))) == cfg
    hns = cfg.replace(layout=8.0, layout_schedule="cosine", layout_end=2.0)
    assert TrainConfig.from_dict(json.loads(json.dumps(hns.to_dict()))) == hns
    with pytest.raises(ValueError, match="TrainConfig field='colour'"):
        TrainConfig.from_dict({**data, "colour": 1})


def test_config_reads_the_flat_form_of_earlier_versions():
    flat = {**TrainConfig.flat(layout=2.0).flat_dict(), "layout_schedule": "constant"}
    flat["layout_end"] = "inf"
    cfg = TrainConfig.from_dict(flat)
    assert cfg.objective == HardNegatives(2.0) and cfg.model == ModelConfig()


def test_values_are_normalised_to_their_field_type():
    a = TrainConfig.flat(layout=2, learning_rate=1e-3, bias=1, p_low=0, dropout=0)
    b = TrainConfig.flat(layout=2.0, learning_rate=0.001, bias=True, p_low=0.0, dropout=0.0)
    assert a == b and a.to_dict() == b.to_dict()
    assert isinstance(a.p_low, float) and a.model.bias is True


def test_setting_and_objective_labels():
    assert TrainConfig().setting == "single"
    assert TrainConfig.flat(bilingual=True, p_low=0.02).setting == "bilingual"
    assert TrainConfig.flat(bilingual=True, p_low=1.0).setting == "low_only"
    assert TrainConfig().objective.label == "CE"
    assert TrainConfig.flat(layout=2.0).objective.label == "HNS(layout=2)"


def test_learning_rate_warmup_then_cosine_to_min():
    cfg = TrainConfig.flat(max_steps=1000, warmup_steps=100, learning_rate=1e-3, min_lr=1e-4)
    lrs = [learning_rate(s, cfg) for s in range(1001)]
    assert lrs[0] == pytest.approx(1e-3 / 101)
    assert all(a < b for a, b in zip(lrs[:100], lrs[1:100], strict=False))  # warmup increases
    assert lrs[100] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[100:], lrs[101:], strict=False))  # decay never increases
    assert lrs[1000] == pytest.approx(1e-4)
    assert lrs[550] == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))  # cosine midpoint


def test_weight_decay_on_matrices_only_including_the_tied_embedding(tiny_corpus):
    cfg = tiny_config(tiny_corpus)
    model = GPT(cfg.model, tiny_corpus.vocab_size)
    decay, no_decay = make_optimizer(model, cfg).param_groups
    assert decay["weight_decay"] == cfg.weight_decay and no_decay["weight_decay"] == 0.0
    assert any(p is model.embedding for p in decay["params"])
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() < 2 for p in no_decay["params"])
    n_params = len(list(model.parameters()))  # the tied matrix appears once
    assert len(decay["params"]) + len(no_decay["params"]) == n_params


def test_same_seed_gives_identical_numbers_on_cpu(tiny_corpus):
    cfg = tiny_config(tiny_corpus, dropout=0.1, layout=2.0)
    a = train(cfg, tiny_corpus, device="cpu", progress=False)
    b = train(cfg, tiny_corpus, device="cpu", progress=False)
    assert states_equal(a.model, b.model)
    assert a.train_log.equals(b.train_log)
    assert a.eval_tokens.equals(b.eval_tokens)
    c = train(cfg.replace(seed=1), tiny_corpus, device="cpu", progress=False)
    assert not states_equal(a.model, c.model)


def test_interrupted_run_resumes_to_the_same_weights(tiny_corpus, tmp_path):
    cfg = tiny_config(tiny_corpus, dropout=0.1, bilingual=True, p_low=0.3)
    full = train(cfg, tiny_corpus, tmp_path / "a", device="cpu", progress=False)
    assert train(cfg, tiny_corpus, tmp_path / "b", stop_after=7, progress=False) is None
    assert (tmp_path / "b" / "checkpoint.pt").exists()
    resumed = train(cfg, tiny_corpus, tmp_path / "b", device="cpu", progress=False)
    assert states_equal(full.model, resumed.model)
    assert full.train_log.drop(columns=[]).equals(resumed.train_log)
    assert full.train_tokens.equals(resumed.train_tokens)
    assert full.eval_tokens.reset_index(drop=True).equals(resumed.eval_tokens)


def test_hns_training_differs_from_ce_and_records_both_losses(tiny_corpus):
    ce = train(tiny_config(tiny_corpus), tiny_corpus, progress=False)
    hns = train(tiny_config(tiny_corpus, layout=0.5), tiny_corpus, progress=False)
    assert not states_equal(ce.model, hns.model)
    # CE: the objective is the cross-entropy; HNS: its objective is a lower bound of it.
    assert (ce.train_tokens["ce_sum"] == ce.train_tokens["objective_sum"]).all()
    assert (hns.train_tokens["objective_sum"] <= hns.train_tokens["ce_sum"] + 1e-9).all()
    assert (hns.train_tokens["objective_sum"] < hns.train_tokens["ce_sum"]).any()


def test_logs_cover_every_step_and_position(tiny_corpus):
    cfg = tiny_config(tiny_corpus)
    res = train(cfg, tiny_corpus, progress=False)
    assert res.train_log["step"].tolist() == [3, 6, 9, 12]
    # every target position of every batch is counted once in the per-token log
    assert res.train_tokens["count"].sum() == cfg.max_steps * cfg.batch_size * cfg.model.block_size
    assert sorted(res.eval_tokens["step"].unique()) == [0, 6, 12]
    per_eval = res.eval_tokens.groupby("step")["count"].sum()
    assert (per_eval == len(tiny_corpus.val) - 1).all()


def test_token_loss_log_sums_by_target():
    log = TokenLossLog(vocab_size=4, device=torch.device("cpu"))
    targets = torch.tensor([[0, 2, 2], [3, 0, 2]])
    ce = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    log.add(targets, ce, ce / 2)
    log.flush(step=7)
    rows = {r["token"]: r for r in log.records}
    assert set(rows) == {0, 2, 3}  # token 1 never occurred: no row, not a zero
    assert rows[2]["count"] == 3 and rows[2]["ce_sum"] == pytest.approx(11.0)
    assert rows[0]["objective_sum"] == pytest.approx(3.0)
    assert all(r["step"] == 7 for r in log.records)


def test_corpus_mismatch_and_bad_device_are_rejected(tiny_corpus):
    with pytest.raises(ValueError, match="data_sha256"):
        train(TrainConfig.flat(max_steps=1), tiny_corpus, progress=False)
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")
    assert resolve_device("cpu").type == "cpu"


def test_layout_schedules_interpolate_from_start_to_end():
    const = TrainConfig.flat(layout=2.0, max_steps=11)
    assert [const.objective.layout_at(s, 11) for s in (0, 5, 10)] == [2.0, 2.0, 2.0]
    lin = TrainConfig.flat(layout=8.0, layout_end=2.0, layout_schedule="linear", max_steps=11)
    assert [lin.objective.layout_at(s, 11) for s in (0, 5, 10)] == pytest.approx([8.0, 5.0, 2.0])
    cos = lin.replace(layout_schedule="cosine")
    assert cos.objective.layout_at(0, 11) == 8.0 and cos.objective.layout_at(
        10, 11
    ) == pytest.approx(2.0)
    assert cos.objective.layout_at(5, 11) == pytest.approx(5.0)  # the midpoint of half a cosine
    assert cos.objective.layout_at(2, 11) > lin.objective.layout_at(
        2, 11
    )  # cosine lingers near the start
    assert cos.objective.label == "HNS(layout=8→2, cosine)" and cos.objective.arm == "HNS"


def test_layout_schedule_validation():
    with pytest.raises(ValueError, match="layout_schedule"):
        TrainConfig.flat(layout_schedule="step")
    with pytest.raises(ValueError, match="layout_end"):
        TrainConfig.flat(layout=2.0, layout_end=1.0)  # an end without a schedule
    with pytest.raises(ValueError, match="layout"):
        TrainConfig.flat(layout=math.inf, layout_end=2.0, layout_schedule="linear")


def test_a_scheduled_run_differs_from_its_constant_endpoints(tiny_corpus):
    sched = tiny_config(tiny_corpus, layout=0.1, layout_end=50.0, layout_schedule="linear")
    start = train(tiny_config(tiny_corpus, layout=0.1), tiny_corpus, progress=False)
    run = train(sched, tiny_corpus, progress=False)
    assert not states_equal(run.model, start.model)


def test_evaluating_before_the_first_log_point_works(tiny_corpus):
    cfg = tiny_config(tiny_corpus, max_steps=3, eval_interval=1, log_interval=5)
    res = train(cfg, tiny_corpus, progress=True)
    assert sorted(res.eval_tokens["step"].unique()) == [0, 1, 2, 3]
    assert res.train_log["step"].tolist() == [3]
