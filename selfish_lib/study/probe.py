"""The unigram probe: how well one direction of an embedding matrix encodes the
frequency of its tokens.

One latent vector x per matrix W is fitted so that softmax(W x) matches the unigram
distribution the model was trained on; the KL divergence that remains says how
much of the frequency profile one direction of W carries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..engine.validation import ParameterError, check_float, check_int
from .matrix import ArrayLike, as_array, normalized

# The unigram probe's budget: a few hundred Adam steps from a small start.
PROBE_STEPS = 500
PROBE_LR = 0.1


def unigram_distribution(
    train_counts: Sequence[float],
    *,
    bilingual: bool = False,
    p_low: float = 0.0,
    ghost: float = 0.5,
) -> np.ndarray:
    """The unigram distribution a model is trained on, over its rows.

    ``train_counts[i]`` is the training-split count of symbol i. For a
    bilingual model the distribution covers both alphabets: the sampler writes
    a block in the low-resource language with probability ``p_low``, so symbol
    i has share (1 − p_low)·f_i and its twin p_low·f_i. A token with an
    expected count of zero gets ``ghost`` counts instead, so that log f is
    finite.
    """
    counts = np.asarray(train_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or (counts < 0).any() or not counts.sum() > 0:
        raise ParameterError(
            "train_counts", counts.tolist(), "a non-empty list of counts >= 0, not all zero"
        )
    p_low = check_float("p_low", p_low, 0.0, 1.0)
    ghost = check_float("ghost", ghost, 0.0, min_inclusive=False)
    if bilingual:
        counts = np.concatenate([(1.0 - p_low) * counts, p_low * counts])
    elif p_low != 0.0:
        raise ParameterError("p_low", p_low, "0.0 for a single-language model")
    counts = np.where(counts > 0, counts, ghost)
    return counts / counts.sum()


def unigram_target(corpus, config) -> np.ndarray:
    """``unigram_distribution`` of a corpus's training split for the rows of a
    model trained with ``config`` (a TrainConfig: its bilingual flag and p_low)."""
    counts = corpus.frequencies.sort_values("token")["count"].to_numpy()
    return unigram_distribution(counts, bilingual=config.bilingual, p_low=config.p_low)


@dataclass(frozen=True)
class ProbeResult:
    """What the unigram probe found for each of M matrices."""

    x: np.ndarray  # (M, d) the fitted latent vectors
    reconstructed: np.ndarray  # (M, V) softmax(W x)
    kl: np.ndarray  # (M,) KL(f ‖ softmax(W x)) in nats
    mse: np.ndarray  # (M,) the final mean squared error of the log-probabilities


def probe_unigram(
    weights: ArrayLike,
    target: ArrayLike,
    *,
    steps: int = PROBE_STEPS,
    lr: float = PROBE_LR,
    seed: int = 0,
) -> ProbeResult:
    """Fit one latent vector x per matrix so that softmax(W x) matches the unigram
    distribution ``target``: Adam on the mean squared error between log softmax(W x)
    and log f, from a small random x drawn with ``seed``.

    ``weights`` is one (V, d) matrix or a stack (M, V, d); ``target`` is (V,) or
    (M, V). The matrices are scale-normalized first (the optimum does not
    depend on the scale; the step size then means the same for every model).
    All M problems are solved in one batched run: the loss is a sum of
    independent terms and Adam works per coordinate, so the result is the same
    as M separate runs. Small KL: the matrix encodes unigram frequency along
    one direction.

    The budget matters when V ≤ d + 1: log f then generically lies in the span
    of W's columns and the all-ones vector, so an unlimited probe would fit any
    full-rank matrix exactly. Each Adam step moves a coordinate of x by about
    ``lr`` at most, so a fixed budget bounds the length of x: the KL then says
    whether a short x suffices, i.e. whether W has a frequency direction.
    """
    steps = check_int("steps", steps, 1)
    lr = check_float("lr", lr, 0.0, min_inclusive=False)
    seed = check_int("seed", seed, 0)
    w = np.asarray(as_array(weights))
    if w.ndim == 2:
        w = w[None]
    if w.ndim != 3 or not np.isfinite(w).all():
        raise ParameterError("weights", f"an array of shape {w.shape}", "(V, d) or (M, V, d)")
    w = np.stack([normalized(m) for m in w])
    f = np.broadcast_to(np.asarray(target, dtype=np.float64), w.shape[:2])
    if (f <= 0).any() or not np.allclose(f.sum(axis=1), 1.0):
        raise ParameterError(
            "target", "a vector that is not a positive distribution", "positive values summing to 1"
        )
    W = torch.from_numpy(w)
    log_f = torch.from_numpy(np.log(f).copy())
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(w.shape[0], w.shape[2], generator=generator, dtype=torch.float64) * 0.01
    x.requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)

    def loss_per_matrix() -> torch.Tensor:
        log_q = torch.log_softmax(torch.einsum("mvd,md->mv", W, x), dim=1)
        return ((log_q - log_f) ** 2).mean(dim=1)

    # The problem is tiny: one thread is faster than several (and does not contend
    # with other work on a busy machine), so the thread count is lowered meanwhile.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss_per_matrix().sum().backward()
            optimizer.step()
        with torch.no_grad():
            mse = loss_per_matrix().numpy()
            log_q = torch.log_softmax(torch.einsum("mvd,md->mv", W, x), dim=1).numpy()
    finally:
        torch.set_num_threads(threads)
    kl = (f * (np.log(f) - log_q)).sum(axis=1)
    return ProbeResult(x.detach().numpy().copy(), np.exp(log_q), kl, mse)


def probe_points(
    weights: Mapping, token_info: pd.DataFrame, target: ArrayLike, **probe: Any
) -> pd.DataFrame:
    """Per (objective, seed) and token: the true unigram share ``f`` and the probe's
    reconstruction ``f_hat`` (for the true-against-reconstructed scatter)."""
    keys = list(weights)
    fit = probe_unigram(np.stack([as_array(weights[k]) for k in keys]), target, **probe)
    info = token_info.sort_values("token").reset_index(drop=True)
    f = np.asarray(target, dtype=np.float64)
    frames = []
    for k, (objective, seed) in enumerate(keys):
        part = info[["token", "symbol", "display", "rank", "language"]].copy()
        part.insert(0, "seed", seed)
        part.insert(0, "objective", objective)
        part["f"], part["f_hat"] = f, fit.reconstructed[k]
        frames.append(part)
    return pd.concat(frames, ignore_index=True)


def probe_note(per_seed: pd.DataFrame, steps: int = PROBE_STEPS, lr: float = PROBE_LR) -> str:
    """Markdown: whether the probe could fit any matrix exactly at this shape, and its
    budget (from ``geometry.metrics_table``)."""
    n, d = int(per_seed["n_rows"].iloc[0]), int(per_seed["n_dims"].iloc[0])
    if n <= d + 1:
        fit = (
            f"With V = {n} ≤ d + 1 = {d + 1}, log f generically lies in the span of W's "
            "columns and the all-ones vector: an unlimited probe would reproduce f exactly "
            "for any full-rank W, so what separates the models here is the budget"
        )
    else:
        fit = (
            f"With V = {n} > d + 1 = {d + 1}, the span of W's columns and the all-ones "
            f"vector has at most {d + 1} of the {n} dimensions of log f, so even an unlimited "
            "probe is generally left with a residual: the KL measures how much of the "
            "frequency profile one direction of W can carry"
        )
    return (
        f"{fit}. The probe takes {steps} Adam steps of size {lr:g} from a short random x, "
        "which bounds how long x can grow: a small KL means a direction of W already "
        "lines the symbols up by frequency."
    )
