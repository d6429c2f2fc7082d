"""TrainConfig validation, the schedule, the optimizer groups, determinism and exact resume;
the loop's numbers against a plain loop of the same pieces; checkpoints that hold state
only, loaded to the CPU, with the logged rows in files cut back on resume; the device
'auto' resolves to, what a run records of it, and the CUDA install check."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import selfish_lib.engine.training as training
from selfish_lib.engine.corpus import BlockSampler
from selfish_lib.engine.evaluation import evaluate_split
from selfish_lib.engine.model import GPT, ModelConfig
from selfish_lib.engine.objectives import AdaptiveGradientGating, HardNegatives
from selfish_lib.engine.scenarios import ScenarioLog
from selfish_lib.engine.training import (
    CHECKPOINT,
    LOG_DIR,
    TokenLossLog,
    TrainConfig,
    check_cublas_workspace,
    cpu_training_threads,
    cuda_install_problem,
    describe_device,
    device_record,
    initial_model,
    learning_rate,
    load_checkpoint,
    logged_tables,
    make_optimizer,
    resolve_device,
    train,
    training_corpus,
    training_step,
    vocab_size,
)
from selfish_lib.engine.validation import ParameterError

TABLES = ("train_log", "train_tokens", "eval_tokens", "scenarios")


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
        ("interim_eval_stride", 0),
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


def test_interim_evaluations_sample_the_split_and_the_last_scores_all_of_it(tiny_corpus):
    """A stride changes what is scored before the last step, nothing else: the weights
    and the last evaluation equal the run's that scored the whole split every time."""
    whole = train(tiny_config(tiny_corpus), tiny_corpus, progress=False)
    sampled = train(tiny_config(tiny_corpus, interim_eval_stride=4), tiny_corpus,
                    progress=False)  # fmt: skip
    assert states_equal(whole.model, sampled.model)
    counts = sampled.eval_tokens.groupby("step")["count"].sum()
    positions = len(tiny_corpus.val) - 1
    assert counts.loc[12] == positions and (counts.drop(12) < positions / 3).all()
    assert sorted(counts.index) == [0, 6, 12]
    last = [r.eval_tokens[r.eval_tokens["step"] == 12].reset_index(drop=True)
            for r in (whole, sampled)]  # fmt: skip
    pd.testing.assert_frame_equal(*last)


def test_evaluating_before_the_first_log_point_works(tiny_corpus):
    cfg = tiny_config(tiny_corpus, max_steps=3, eval_interval=1, log_interval=5)
    res = train(cfg, tiny_corpus, progress=True)
    assert sorted(res.eval_tokens["step"].unique()) == [0, 1, 2, 3]
    assert res.train_log["step"].tolist() == [3]


# --- the loop's numbers --------------------------------------------------------------


def plain_loop(config: TrainConfig, corpus):
    """The training loop as it was written before its rows went to files, rebuilt from
    the same pieces (sampler, step, evaluation, scenario log), every row a dict kept in
    memory and every per-token sum added by numpy, position after position."""
    corpus = training_corpus(corpus, config)
    V = vocab_size(config, corpus.vocab_size)
    cpu = torch.device("cpu")
    with cpu_training_threads(cpu):
        model = initial_model(config, corpus.vocab_size)
        sampler = BlockSampler(corpus.train, config.model.block_size, config.batch_size,
                               config.seed, corpus.vocab_size, p_low=config.p_low)  # fmt: skip
        optimizer = make_optimizer(model, config)
        state = config.objective.initial_state(V, cpu)
        log_prior = corpus.log_prior(config.bilingual, config.p_low)
        sums = np.zeros((3, V))
        window = [0.0, 0.0, 0]
        log, tokens, evals, scenarios = [], [], [], ScenarioLog()

        def evaluate(at: int) -> None:
            # the whole split at the end, every k-th window before it
            stride = 1 if at == config.max_steps else config.interim_eval_stride
            frame = evaluate_split(model, corpus.val, corpus.vocab_size, config.bilingual, cpu,
                                   stride=stride)  # fmt: skip
            frame.insert(0, "step", at)
            evals.append(frame)

        evaluate(0)
        for step in range(config.max_steps):
            lr = learning_rate(step, config)
            x, y = sampler.sample()
            k = config.scenario_interval
            logged = k > 0 and (step + 1) % k == 0
            out = training_step(model, optimizer, x, y, config, lr,
                                scenario_log=scenarios if logged else None, step=step,
                                log_prior=log_prior, objective_state=state)  # fmt: skip
            t = y.reshape(-1).numpy()
            np.add.at(sums[0], t, 1.0)
            np.add.at(sums[1], t, out.ce.reshape(-1).double().numpy())
            np.add.at(sums[2], t, out.objective.reshape(-1).double().numpy())
            window = [window[0] + float(out.loss.double()),
                      window[1] + float(out.ce.mean().double()), window[2] + 1]  # fmt: skip
            done = step + 1
            if done % config.log_interval == 0 or done == config.max_steps:
                for token in range(V):
                    if sums[0][token]:
                        tokens.append(dict(step=done, token=token, count=int(sums[0][token]),
                                           ce_sum=float(sums[1][token]),
                                           objective_sum=float(sums[2][token])))  # fmt: skip
                sums[:] = 0.0
                log.append(
                    dict(
                        step=done,
                        lr=lr,
                        loss=window[0] / window[2],
                        ce=window[1] / window[2],
                        grad_norm=float(out.grad_norm),
                    )
                )
                window = [0.0, 0.0, 0]
            if done % config.eval_interval == 0 or done == config.max_steps:
                evaluate(done)
    tables = {
        "train_log": pd.DataFrame(log),
        "train_tokens": pd.DataFrame(tokens),
        "eval_tokens": pd.concat(evals, ignore_index=True),
        "scenarios": pd.DataFrame(scenarios.records, columns=list(ScenarioLog.COLUMNS)),
    }
    return model, tables


def assert_same_tables(result, tables: dict) -> None:
    for name in TABLES:
        got, want = getattr(result, name), tables[name]
        if want.empty and got.empty:  # an unlogged table: the columns, no rows
            assert list(got.columns) == list(want.columns), name
            continue
        assert got.equals(want), name  # values, dtypes and order, bit for bit


@pytest.mark.parametrize(
    "changes",
    [
        dict(layout=2.0, bilingual=True, p_low=0.3, scenario_interval=4, interim_eval_stride=3),
        dict(objective=AdaptiveGradientGating(alpha=0.1, window=5), scenario_interval=5),
        dict(dropout=0.1, tie_embeddings=False),
    ],
    ids=["hns-bilingual-scenarios", "stateful-objective", "untied-dropout"],
)
def test_the_loop_gives_a_plain_loops_numbers_bit_for_bit(tiny_corpus, tmp_path, changes):
    """The loop writes its rows to files and keeps its sums on the device; a run's numbers
    are still those of the plain loop of the same pieces, whole or interrupted."""
    config = tiny_config(tiny_corpus, **changes)
    model, tables = plain_loop(config, tiny_corpus)
    whole = train(config, tiny_corpus, tmp_path / "whole", device="cpu", progress=False)
    assert states_equal(whole.model, model)
    assert_same_tables(whole, tables)
    assert train(config, tiny_corpus, tmp_path / "cut", stop_after=7, progress=False) is None
    resumed = train(config, tiny_corpus, tmp_path / "cut", device="cpu", progress=False)
    assert states_equal(resumed.model, model)
    assert_same_tables(resumed, tables)


# --- checkpoints and logs --------------------------------------------------------------


def test_a_checkpoint_holds_state_only_and_the_rows_are_in_the_logs(tiny_corpus, tmp_path):
    config = tiny_config(tiny_corpus, scenario_interval=2, max_steps=16, checkpoint_interval=4)
    reference = train(config, tiny_corpus, progress=False)
    work = tmp_path / "work"
    sizes = []
    for stop, steps in ((4, 4), (12, 8)):  # to a checkpoint at step 4, then on to step 12
        train(config, tiny_corpus, work, progress=False, stop_after=steps)
        state = torch.load(work / CHECKPOINT, weights_only=False)
        assert state["step"] == stop and state["format"] == training.CHECKPOINT_FORMAT
        assert not {"train_log", "scenarios", "eval_tokens"} & set(state)
        assert set(state["train_tokens"]) == {"sums"}
        sizes.append((work / CHECKPOINT).stat().st_size)
        # the logs up to the checkpoint are the uninterrupted run's rows up to its step
        covered = logged_tables(work, state)
        for name in TABLES:
            want = getattr(reference, name)
            want = want[want["step"] <= stop].reset_index(drop=True)
            assert covered[name].equals(want) or (covered[name].empty and want.empty), name
    # three times the steps, three times the rows: the same checkpoint size, but for the
    # log lengths it records growing a byte wider (the archive pads to 64 bytes); the rows
    # themselves would add kilobytes
    assert abs(sizes[1] - sizes[0]) <= 128


def test_resume_cuts_the_logs_back_to_the_checkpoint(tiny_corpus, tmp_path):
    config = tiny_config(tiny_corpus, scenario_interval=3)
    reference = train(config, tiny_corpus, progress=False)
    work = tmp_path / "work"
    train(config, tiny_corpus, work, progress=False, stop_after=7)  # checkpoint at step 4
    # rows of steps 5-7 are in the logs; a write cut short adds half a chunk after them
    with open(work / LOG_DIR / "train_log.npy", "ab") as handle:
        handle.write(b"\x93NUMPY half a chunk")
    resumed = train(config, tiny_corpus, work, progress=False)
    assert states_equal(reference.model, resumed.model)
    for name in TABLES:
        assert getattr(resumed, name).equals(getattr(reference, name)), name


def test_logs_shorter_than_the_checkpoint_says_restart_the_run(tiny_corpus, tmp_path, capsys):
    config = tiny_config(tiny_corpus)
    reference = train(config, tiny_corpus, progress=False)
    work = tmp_path / "work"
    train(config, tiny_corpus, work, progress=False, stop_after=5)
    log = work / LOG_DIR / "eval_tokens.npy"
    log.write_bytes(log.read_bytes()[:-10])
    resumed = train(config, tiny_corpus, work, progress=False)
    err = capsys.readouterr().err
    assert "discarded checkpoint" in err and "eval_tokens log has" in err
    assert states_equal(reference.model, resumed.model)
    assert resumed.eval_tokens.equals(reference.eval_tokens)


def format_1_checkpoint(work) -> None:
    """Rewrite the checkpoint of ``work`` as the earlier version wrote it: every logged
    row inside (dicts, and the evaluation as lists), no log files, no device."""
    state = torch.load(work / CHECKPOINT, weights_only=False)
    rows = logged_tables(work, state)
    legacy = {k: v for k, v in state.items() if k not in ("format", "logs", "device")}
    legacy["train_log"] = rows["train_log"].to_dict("records")
    legacy["train_tokens"] = {"records": rows["train_tokens"].to_dict("records"),
                              "sums": state["train_tokens"]["sums"]}  # fmt: skip
    legacy["scenarios"] = rows["scenarios"].to_dict("records")
    legacy["eval_tokens"] = rows["eval_tokens"].to_dict("list")
    shutil.rmtree(work / LOG_DIR)
    torch.save(legacy, work / CHECKPOINT)


def test_a_checkpoint_of_the_earlier_format_resumes_exactly(tiny_corpus, tmp_path):
    config = tiny_config(tiny_corpus, layout=2.0, scenario_interval=3)
    reference = train(config, tiny_corpus, progress=False)
    work = tmp_path / "work"
    train(config, tiny_corpus, work, progress=False, stop_after=9)  # checkpoint at 8
    format_1_checkpoint(work)
    resumed = train(config, tiny_corpus, work, progress=False)
    assert states_equal(reference.model, resumed.model)
    for name in TABLES:
        assert getattr(resumed, name).equals(getattr(reference, name)), name


def test_checkpoints_load_to_the_cpu_whatever_the_device(tiny_corpus, tmp_path):
    """A GPU run's checkpoint used to be loaded with every tensor mapped to the GPU: the
    RNG states then cannot be restored and the run restarted from step 0. Here a
    checkpoint is loaded for a device that is not the CPU ('meta', which holds no data):
    every tensor still comes back on the CPU and the random streams resume exactly."""
    config = tiny_config(tiny_corpus, dropout=0.1)
    work = tmp_path / "work"
    train(config, tiny_corpus, work, progress=False, stop_after=5)  # checkpoint at 4
    state = torch.load(work / CHECKPOINT, weights_only=False)
    state["device"] = {"kind": "meta", "precision": "fp32"}  # as if written on that device
    torch.save(state, work / CHECKPOINT)
    loaded = load_checkpoint(work / CHECKPOINT, config, torch.device("meta"))
    tensors = list(_tensors(loaded))
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    # the streams a resumed run draws from continue where the checkpoint left them
    sampler = BlockSampler(training_corpus(tiny_corpus, config).train, 16, 4, 123,
                           tiny_corpus.vocab_size)  # fmt: skip
    sampler.load_state_dict(loaded["sampler"])
    torch.set_rng_state(loaded["rng_cpu"])
    after = (torch.rand(3), sampler.sample()[0])
    torch.set_rng_state(state["rng_cpu"])
    sampler.load_state_dict(state["sampler"])
    assert torch.equal(after[0], torch.rand(3)) and torch.equal(after[1], sampler.sample()[0])


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)


def test_a_checkpoint_of_another_device_kind_is_rejected(tiny_corpus, tmp_path, capsys):
    config = tiny_config(tiny_corpus)
    reference = train(config, tiny_corpus, progress=False)
    work = tmp_path / "work"
    train(config, tiny_corpus, work, progress=False, stop_after=5)
    state = torch.load(work / CHECKPOINT, weights_only=False)
    state["device"] = {"kind": "cuda", "precision": "fp32"}
    torch.save(state, work / CHECKPOINT)
    resumed = train(config, tiny_corpus, work, device="cpu", progress=False)
    err = capsys.readouterr().err
    assert "written on cuda (fp32), this run trains on cpu (fp32)" in err and "step 0" in err
    assert states_equal(reference.model, resumed.model)


def test_a_failed_log_write_says_which_file(tiny_corpus, tmp_path, monkeypatch):
    def full(handle, array, allow_pickle=False):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(training.np, "save", full)
    with pytest.raises(OSError, match=r"could not write the training log .*logs/"):
        train(tiny_config(tiny_corpus), tiny_corpus, tmp_path / "work", progress=False)


def test_host_added_token_sums_equal_the_direct_ones():
    """On a GPU the per-token sums wait on the device and are added on the host; the same
    losses give the CPU's sums bit for bit, across flushes and a checkpoint between."""
    gen = torch.Generator().manual_seed(0)
    direct = TokenLossLog(7, torch.device("cpu"))
    host = TokenLossLog(7, torch.device("cpu"), on_host=True)
    for step in range(1, 10):
        y = torch.randint(0, 7, (3, 5), generator=gen)
        ce, obj = torch.rand(3, 5, generator=gen), torch.rand(3, 5, generator=gen)
        for log in (direct, host):
            log.add(y, ce, obj)
        if step == 5:  # a checkpoint: the host log adds what waits first
            a, b = direct.state_dict()["sums"], host.state_dict()["sums"]
            assert all(torch.equal(x, z) for x, z in zip(a, b, strict=True))
        if step % 3 == 0:
            direct.flush(step)
            host.flush(step)
    assert host.table.frame().equals(direct.table.frame())


# --- devices -----------------------------------------------------------------------------


def test_auto_resolves_to_what_the_environment_names(monkeypatch):
    monkeypatch.setenv(training.AUTO_DEVICE_ENV, "cpu")
    assert resolve_device("auto").type == "cpu"
    assert describe_device("auto") == "device: cpu (auto: SELFISH_AUTO_DEVICE=cpu)"
    assert describe_device("cpu") == "device: cpu (asked for cpu)"
    for bad in ("tpu", "auto", "cuda:99"):
        monkeypatch.setenv(training.AUTO_DEVICE_ENV, bad)
        with pytest.raises(ParameterError, match="SELFISH_AUTO_DEVICE"):
            resolve_device("auto")
    monkeypatch.delenv(training.AUTO_DEVICE_ENV)
    monkeypatch.setattr(training.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(training, "_mps_available", lambda: False)
    assert describe_device("auto") == "device: cpu (auto: no CUDA or MPS)"


def test_a_cpu_run_records_its_device(tiny_corpus):
    record = device_record(torch.device("cpu"))
    assert record == {"kind": "cpu", "precision": "fp32", "torch": torch.__version__}
    result = train(tiny_config(tiny_corpus, max_steps=2), tiny_corpus, progress=False)
    assert result.device_record == record and result.device == "cpu"


def test_the_cublas_workspace_is_a_deterministic_one(monkeypatch):
    import os

    assert os.environ[training.CUBLAS_ENV] in training.DETERMINISTIC_CUBLAS  # set on import
    monkeypatch.setenv(training.CUBLAS_ENV, ":0:0")
    with pytest.raises(ParameterError, match="CUBLAS_WORKSPACE_CONFIG"):
        check_cublas_workspace()


SMI = "| NVIDIA-SMI 550.54.15    Driver Version: 550.54.15    CUDA Version: {} |"


@pytest.mark.parametrize(
    "driver, index",
    [("12.4", "cu124"), ("12.5", "cu124"), ("13.0", "cu130"), ("11.8", "cu118"),
     ("11.4", "cuXXX")],
)  # fmt: skip
def test_the_cuda_install_check_names_the_wheel_index(driver, index):
    problem = cuda_install_problem(SMI.format(driver), False, "2.5.1+cpu")
    assert f"https://download.pytorch.org/whl/{index}" in problem
    assert "torch.cuda.is_available() is False" in problem and "CPU-only" in problem
    assert cuda_install_problem(SMI.format(driver), True, "2.5.1") is None  # it works
    assert cuda_install_problem(None, False, "2.5.1+cpu") is None  # no nvidia-smi
