"""Training on CUDA: deterministic, resumable bit for bit, recorded, and within a tested
tolerance of the CPU (never mixed with it).

The tests marked ``cuda`` need a GPU and are skipped without one (the default test run
pins 'auto' to the CPU, ``conftest.py``; these ask for CUDA by name). The others check,
on the CPU, the code paths that exist for a GPU: the per-token sums that a GPU adds on
the host give the CPU's sums bit for bit, and the device context restores what it sets.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import selfish_lib.engine.evaluation as evaluation
from selfish_lib.engine.corpus import Corpus
from selfish_lib.engine.ensemble import train_ensemble
from selfish_lib.engine.evaluation import aggregate, evaluate_ids, evaluate_split
from selfish_lib.engine.losses import FUSED_FROM_NUMEL, hns_cross_entropy
from selfish_lib.engine.model import GPT, ModelConfig
from selfish_lib.engine.objectives import REGISTRY, CrossEntropy, HardNegatives
from selfish_lib.engine.profiles import get_profile
from selfish_lib.engine.runs import OTHER_DEVICE_DIR, get_or_train
from selfish_lib.engine.training import (
    CPU_TRAINING_THREADS,
    TrainConfig,
    train,
    training_device,
)


def needs_cuda(test):
    """Mark ``test`` ``cuda`` and skip it where this machine has no CUDA."""
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA on this machine")
    return pytest.mark.cuda(skip(test))


TABLES = ("train_log", "train_tokens", "eval_tokens", "scenarios")
# CPU and GPU kernels add in other orders: after the tiny runs below their final
# validation losses differ by rounding only (a few 1e-6); this bounds it.
CPU_GPU_TOLERANCE = 1e-4
# An ensemble's batched products against a solo run's products, on the GPU: as on the
# CPU (tests/test_ensemble.py), rounding carried along 30 steps.
ENSEMBLE_TOLERANCE = 1e-4


def tiny(corpus: Corpus, **changes) -> TrainConfig:
    return TrainConfig.flat(
        n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, max_steps=12,
        warmup_steps=3, eval_interval=6, log_interval=3, checkpoint_interval=4,
        data_sha256=corpus.sha256,
    ).replace(**changes)  # fmt: skip


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def same_tables(a, b) -> bool:
    return all(getattr(a, t).equals(getattr(b, t)) for t in TABLES)


def final_eval(result, config: TrainConfig) -> pd.DataFrame:
    ev = result.eval_tokens
    return ev[ev["step"] == config.max_steps].drop(columns="step")


def final_loss(result) -> float:
    ev = result.eval_tokens
    last = ev[ev["step"] == ev["step"].max()]
    return float(last["loss_sum"].sum() / last["count"].sum())


# --- on the CPU: the paths a GPU takes ----------------------------------------------------


@pytest.mark.parametrize("bilingual", [False, True])
def test_evaluation_sums_added_on_the_host_equal_the_direct_ones(
    tiny_corpus, monkeypatch, bilingual
):
    """On a GPU the evaluation's per-token sums are added on the host after the split is
    scored; for the same per-position values that gives the CPU's sums bit for bit."""
    torch.manual_seed(0)
    config = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16)
    model = GPT(config, tiny_corpus.vocab_size * (2 if bilingual else 1))
    args = (model, tiny_corpus.val, tiny_corpus.vocab_size, bilingual, "cpu")
    direct = evaluate_split(*args)
    monkeypatch.setattr(evaluation, "host_reduction", lambda device: True)
    assert evaluate_split(*args).equals(direct)
    # and it is batch by batch what the direct path adds, not just the same total
    small = evaluate_ids(model, tiny_corpus.val, "cpu", batch_windows=3)
    monkeypatch.undo()
    assert small.equals(evaluate_ids(model, tiny_corpus.val, "cpu", batch_windows=3))


def test_the_cpu_device_context_pins_the_threads_and_restores_them():
    before = torch.get_num_threads()
    with training_device(torch.device("cpu")):
        assert torch.get_num_threads() == CPU_TRAINING_THREADS
    assert torch.get_num_threads() == before


# --- on a GPU --------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("changes", [dict(dropout=0.1, scenario_interval=3),
                                     dict(layout=2.0, bilingual=True, p_low=0.3)])  # fmt: skip
def test_cuda_runs_repeat_and_resume_bit_for_bit(tiny_corpus, tmp_path, changes):
    config = tiny(tiny_corpus, **changes)
    first = train(config, tiny_corpus, device="cuda", progress=False)
    again = train(config, tiny_corpus, device="cuda", progress=False)
    assert same_weights(first.model, again.model) and same_tables(first, again)
    work = tmp_path / "work"
    assert train(config, tiny_corpus, work, device="cuda", progress=False, stop_after=7) is None
    resumed = train(config, tiny_corpus, work, device="cuda", progress=False)
    assert same_weights(first.model, resumed.model) and same_tables(first, resumed)
    record = first.device_record
    assert record["kind"] == "cuda" and record["deterministic"] is True and record["gpu"]
    assert not torch.are_deterministic_algorithms_enabled()  # restored after training


@needs_cuda
@pytest.mark.parametrize("layout", [0.5, 2.0, 8.0])
def test_the_fused_hns_loss_on_cuda_matches_float64(layout):
    """The fused loss (from ``FUSED_FROM_NUMEL`` logits on) in float32 on the GPU against
    masked_fill + cross-entropy in float64 on the CPU: loss and gradient."""
    gen = torch.Generator().manual_seed(1)
    n, V = 2048, 130
    assert n * V >= FUSED_FROM_NUMEL
    logits = torch.randn(n, V, generator=gen, dtype=torch.float64) * 3
    targets = torch.randint(0, V, (n,), generator=gen)
    exact = logits.clone().requires_grad_(True)
    target_logit = exact.detach().gather(1, targets.unsqueeze(1))
    kept = exact.masked_fill(exact.detach() < target_logit - layout, -math.inf)
    want = F.cross_entropy(kept, targets)
    want.backward()
    fast = logits.float().cuda().requires_grad_(True)
    got = hns_cross_entropy(fast, targets.cuda(), layout)
    got.backward()
    torch.testing.assert_close(got.double().cpu(), want.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fast.grad.double().cpu(), exact.grad, rtol=1e-5, atol=1e-8)


@needs_cuda
def test_an_ensemble_on_cuda_matches_its_solo_runs(corpus):
    smoke = get_profile("smoke")
    configs = [smoke.config("single", arm, seed) for arm in (CrossEntropy(), HardNegatives(0.5))
               for seed in (0, 1)]  # fmt: skip
    together = train_ensemble(configs, corpus, device="cuda", progress=False)
    info = corpus.token_info()
    for config, member in zip(configs, together, strict=True):
        solo = train(config, corpus, device="cuda", progress=False)
        assert abs(final_loss(member) - final_loss(solo)) <= ENSEMBLE_TOLERANCE
        a, b = (aggregate(final_eval(r, config), info, ["group"]) for r in (member, solo))
        for metric in ("loss", "top1", "recall5", "mrr"):
            assert (a[metric] - b[metric]).abs().max() <= ENSEMBLE_TOLERANCE, metric


def real_language_members_against_solo(corpus: Corpus, device: str) -> float:
    """Two runs of a real second language stacked and each alone on ``device``: the
    members' data streams are asserted equal to the solo runs'; the largest gap of a
    final validation loss is returned."""
    smoke = get_profile("smoke")
    configs = [smoke.language_config("nahuatl", "disjoint", arm, seed, max_steps=12,
                                     eval_interval=6, language_chars=2000, p_low=0.5)
               for arm, seed in ((CrossEntropy(), 0), (HardNegatives(0.5), 1))]  # fmt: skip
    together = train_ensemble(configs, corpus, device=device, progress=False)
    gaps = []
    for config, member in zip(configs, together, strict=True):
        solo = train(config, corpus, device=device, progress=False)
        keys = ["step", "token", "count"]
        assert member.train_tokens[keys].equals(solo.train_tokens[keys])
        assert member.eval_tokens[keys].equals(solo.eval_tokens[keys])
        gaps.append(abs(final_loss(member) - final_loss(solo)))
    return max(gaps)


@needs_cuda
def test_real_language_members_on_cuda_match_their_solo_runs(corpus):
    """The blocks of two texts gathered on the device (``ensemble.member_batches``) are
    each member's solo stream on CUDA too, and its losses within the tolerance."""
    assert real_language_members_against_solo(corpus, "cuda") <= ENSEMBLE_TOLERANCE


@needs_cuda
def test_cuda_and_cpu_runs_agree_within_the_tolerance_never_bit_for_bit(tiny_corpus):
    config = tiny(tiny_corpus, layout=2.0)
    gpu = train(config, tiny_corpus, device="cuda", progress=False)
    cpu = train(config, tiny_corpus, device="cpu", progress=False)
    assert abs(final_loss(gpu) - final_loss(cpu)) <= CPU_GPU_TOLERANCE
    counts = [r.eval_tokens["count"] for r in (gpu, cpu)]
    assert counts[0].equals(counts[1])  # the same positions scored


@needs_cuda
def test_evaluation_on_cuda_matches_the_cpu(tiny_corpus):
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16),
                tiny_corpus.vocab_size)  # fmt: skip
    cpu = evaluate_split(model, tiny_corpus.val, tiny_corpus.vocab_size, False, "cpu")
    gpu = evaluate_split(model.cuda(), tiny_corpus.val, tiny_corpus.vocab_size, False, "cuda")
    assert gpu["count"].equals(cpu["count"])
    for column in ("loss_sum", "top1_sum", "top5_sum", "rr_sum"):
        pd.testing.assert_series_equal(gpu[column], cpu[column], rtol=1e-5, atol=1e-6)


# Objectives whose loss has no deterministic CUDA kernel (they raise under
# torch.use_deterministic_algorithms): 1.5-entmax sorts and takes a float cumsum.
NO_DETERMINISTIC_KERNEL = {"entmax15": "torch.cumsum on CUDA floats (losses.entmax15)"}


@needs_cuda
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_objective_trains_deterministically_on_cuda(tiny_corpus, name):
    if name in NO_DETERMINISTIC_KERNEL:
        pytest.xfail(NO_DETERMINISTIC_KERNEL[name])
    config = tiny(tiny_corpus, objective=REGISTRY[name](), max_steps=4, scenario_interval=2)
    a = train(config, tiny_corpus, device="cuda", progress=False)
    b = train(config, tiny_corpus, device="cuda", progress=False)
    assert same_weights(a.model, b.model) and same_tables(a, b)


@needs_cuda
def test_the_store_keeps_cuda_and_cpu_runs_apart(tiny_corpus, tmp_path, capsys):
    config = tiny(tiny_corpus, max_steps=3)
    gpu = get_or_train(config, corpus=tiny_corpus, results_dir=tmp_path, device="cuda",
                       progress=False)  # fmt: skip
    assert gpu.device["kind"] == "cuda" and gpu.device["gpu"]
    cpu = get_or_train(config, corpus=tiny_corpus, results_dir=tmp_path, device="cpu",
                       progress=False)  # fmt: skip
    assert cpu.trained_now and cpu.device["kind"] == "cpu" and cpu.id == gpu.id
    assert "not served (it was trained on cuda" in capsys.readouterr().err
    assert [p.name.split(".")[1] for p in (tmp_path / "runs" / OTHER_DEVICE_DIR).iterdir()] == [
        "cuda"
    ]
