"""Embedding geometry: projections, distances, isotropy and the unigram probe.

Matrices are compared after dividing by their *scale*, the root mean square
of their row norms, so that models whose embeddings grew to different sizes
are drawn and measured on comparable axes. Every distance and the
partition-function isotropy below is computed on the scale-normalized matrix;
cosines, the effective rank and the unigram probe do not depend on the scale.

Rows are tokens. In a bilingual model, row ``i`` (high-resource language) and
row ``i + V`` (low-resource language, V symbols per alphabet) are *twins*; the
``token_info`` tables of ``corpus.Corpus.token_info`` say which row is which
(columns token, base_token, rank, language).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats as st
from scipy.special import logsumexp

from ..engine.validation import ParameterError, check_float, check_int
from .stats import aggregate_seeds, compare, paired_difference

ArrayLike = torch.Tensor | np.ndarray
PROJECTIONS = ("PCA", "t-SNE")
OBJECTIVES = ("initial", "CE", "HNS")  # 'initial': the weights a run starts from
# Eigenvalues of WᵀW at or below this fraction of the largest count as zero.
ZERO_EIGENVALUE_RTOL = 1e-10
# The unigram probe's budget: a few hundred Adam steps from a small start.
PROBE_STEPS = 500
PROBE_LR = 0.1

# Per-model scalar metrics: column name -> (label, what a larger value means).
METRICS: dict[str, tuple[str, str]] = {
    "twin_distance": ("mean twin distance", "twins farther apart"),
    "language_centroid_distance": ("distance between language centroids", "languages farther"),
    "rare_centroid_distance_high": (
        "rarest-to-rest centroid distance (high)",
        "rare symbols farther from the rest",
    ),
    "rare_centroid_distance_low": (
        "rarest-to-rest centroid distance (low)",
        "rare symbols farther from the rest",
    ),
    "norm_rank_spearman_high": (
        "Spearman(norm, rank), high",
        "rarer symbols have larger norms",
    ),
    "norm_rank_spearman_low": ("Spearman(norm, rank), low", "rarer symbols have larger norms"),
    "mean_cosine": ("mean pairwise cosine", "rows share a common direction"),
    "effective_rank": ("effective rank (centred)", "more directions used"),
    "isotropy": ("partition isotropy I(W)", "more isotropic"),
    "probe_kl": ("unigram probe KL(f ‖ f̂)", "frequency harder to read off"),
}
DISTANCE_METRICS = (
    "twin_distance",
    "language_centroid_distance",
    "rare_centroid_distance_high",
    "rare_centroid_distance_low",
)
NORM_METRICS = ("norm_rank_spearman_high", "norm_rank_spearman_low")
ISOTROPY_METRICS = ("mean_cosine", "effective_rank", "isotropy")


# --- scale ----------------------------------------------------------------------------


def as_array(weight: ArrayLike) -> np.ndarray:
    """A float64 numpy copy of an embedding matrix (rows = tokens)."""
    if isinstance(weight, torch.Tensor):
        weight = weight.detach().cpu().double().numpy()
    return np.array(weight, dtype=np.float64)


def _matrix(weight: ArrayLike, name: str = "weight") -> np.ndarray:
    w = as_array(weight)
    if w.ndim != 2 or min(w.shape) < 1:
        raise ParameterError(name, f"an array of shape {w.shape}", "a non-empty 2-D matrix")
    if not np.isfinite(w).all():
        raise ParameterError(name, "a matrix with NaN or inf entries", "finite entries")
    return w


def scale(weight: ArrayLike) -> float:
    """Root mean square of the row norms."""
    w = as_array(weight)
    return float(np.sqrt((w**2).sum(axis=1).mean()))


def normalized(weight: ArrayLike) -> np.ndarray:
    """The matrix divided by its scale (rows have unit root-mean-square norm)."""
    w = as_array(weight)
    s = scale(w)
    if s == 0:
        raise ParameterError("weight", "a zero matrix", "a matrix with a non-zero row")
    return w / s


# --- projections ------------------------------------------------------------------------


def pca_2d(weight: ArrayLike, seed: int = 0) -> np.ndarray:
    """(n, 2) principal-component coordinates of the scale-normalized rows.

    Signs are fixed (the largest-magnitude loading of each component is made
    positive) so that the same matrix always gives the same picture.
    """
    from sklearn.decomposition import PCA  # imported here: charts import this module

    w = normalized(weight)
    pca = PCA(n_components=2, random_state=seed)
    coords = pca.fit_transform(w)
    for k in range(2):
        if pca.components_[k][np.argmax(np.abs(pca.components_[k]))] < 0:
            coords[:, k] *= -1
    return coords


def check_perplexity(perplexity: float, n_rows: int) -> float:
    """Validate a t-SNE perplexity for ``n_rows`` points: a real number in (0, n_rows)."""
    n_rows = check_int("n_rows", n_rows, 2)
    allowed = f"a real number > 0 and < {n_rows} (the number of embedding rows)"
    try:
        value = check_float("perplexity", perplexity, 0.0, min_inclusive=False)
    except ParameterError:
        raise ParameterError("perplexity", perplexity, allowed) from None
    if value >= n_rows:
        raise ParameterError("perplexity", perplexity, allowed)
    return value


def tsne_2d(weight: ArrayLike, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """(n, 2) t-SNE coordinates of the scale-normalized rows, centred, with unit
    root-mean-square radius.

    t-SNE's own units are arbitrary (they depend on the perplexity and the
    optimization), so the picture is rescaled: two models then share axes and
    only the arrangement is compared. PCA initialization and ``seed`` make the
    result deterministic.
    """
    from sklearn.manifold import TSNE

    w = normalized(weight)
    perplexity = check_perplexity(perplexity, len(w))
    seed = check_int("seed", seed, 0)
    # 'exact' rather than Barnes-Hut: for a few hundred rows it is as fast and has no
    # approximation. One BLAS/OpenMP thread: for so small a problem extra threads only
    # contend (tens of times slower on a busy two-core machine). threadpoolctl is a
    # dependency of scikit-learn.
    from threadpoolctl import threadpool_limits

    tsne = TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=seed, method="exact"
    )
    with threadpool_limits(limits=1):
        coords = tsne.fit_transform(w).astype(np.float64)  # sklearn returns float32
    coords = coords - coords.mean(axis=0)
    radius = math.sqrt(float((coords**2).sum(axis=1).mean()))
    return coords / radius if radius > 0 else coords


def rarest_base_tokens(token_info: pd.DataFrame, n_rare: int = 5) -> list[int]:
    """The ``n_rare`` base tokens with the highest (rarest) frequency ranks, rarest first."""
    base = token_info.drop_duplicates("base_token")
    allowed = f"an integer >= 1 and < {len(base)} (the number of symbols)"
    if isinstance(n_rare, bool) or not isinstance(n_rare, int) or not 1 <= n_rare < len(base):
        raise ParameterError("n_rare", n_rare, allowed)
    return base.sort_values("rank", ascending=False)["base_token"].head(n_rare).tolist()


def projection_table(
    weights: Mapping[str, ArrayLike],
    token_info: pd.DataFrame,
    *,
    perplexity: float = 30.0,
    seed: int = 0,
    n_rare: int = 5,
) -> pd.DataFrame:
    """PCA and t-SNE coordinates of each matrix of ``weights`` (label -> matrix).

    One row per method, label ('objective' column) and token, with the token's
    symbol, display, rank, language, ``rare`` (one of the ``n_rare`` rarest
    symbols) and x, y. ``token_info`` must describe every row of the matrices.
    """
    rare = set(rarest_base_tokens(token_info, n_rare))
    info = token_info.sort_values("token").reset_index(drop=True)
    frames = []
    for label, weight in weights.items():
        w = _matrix(weight)
        if len(w) != len(info):
            raise ParameterError(
                f"weights[{label!r}]", f"a matrix with {len(w)} rows", f"{len(info)} rows"
            )
        check_perplexity(perplexity, len(w))
        for method, coords in (
            ("PCA", pca_2d(w, seed)),
            ("t-SNE", tsne_2d(w, perplexity, seed)),
        ):
            part = info[["token", "base_token", "symbol", "display", "rank", "language"]].copy()
            part.insert(0, "objective", label)
            part.insert(0, "method", method)
            part["rare"] = part["base_token"].isin(rare)
            part["x"], part["y"] = coords[:, 0], coords[:, 1]
            frames.append(part)
    return pd.concat(frames, ignore_index=True)


# --- distances --------------------------------------------------------------------------


def row_norms(weight: ArrayLike) -> np.ndarray:
    """Norm of each row of the scale-normalized matrix (root mean square 1)."""
    return np.linalg.norm(normalized(weight), axis=1)


def twin_distance(weight: ArrayLike, n_base: int) -> float:
    """Mean distance between rows i and i + ``n_base`` (the twins), in units of the scale."""
    w = _matrix(weight)
    n_base = check_int("n_base", n_base, 1)
    if len(w) != 2 * n_base:
        raise ParameterError(
            "n_base", n_base, f"half the number of rows ({len(w)} / 2) of a bilingual matrix"
        )
    w = normalized(w)
    return float(np.linalg.norm(w[:n_base] - w[n_base:], axis=1).mean())


def centroid_distance(weight: ArrayLike, rows_a: Sequence[int], rows_b: Sequence[int]) -> float:
    """Distance between the centroids of two sets of rows, in units of the whole matrix's
    scale."""
    w = normalized(_matrix(weight))
    a, b = np.asarray(rows_a, dtype=int), np.asarray(rows_b, dtype=int)
    for name, rows in (("rows_a", a), ("rows_b", b)):
        if rows.size == 0 or rows.min() < 0 or rows.max() >= len(w):
            raise ParameterError(
                name, rows.tolist(), f"a non-empty list of rows in 0..{len(w) - 1}"
            )
    return float(np.linalg.norm(w[a].mean(axis=0) - w[b].mean(axis=0)))


# --- isotropy ---------------------------------------------------------------------------


def mean_pairwise_cosine(weight: ArrayLike) -> float:
    """Mean cosine similarity over all pairs of distinct rows (0 for an orthogonal set,
    near 1 when every row points the same way)."""
    w = _matrix(weight)
    if len(w) < 2:
        raise ParameterError("weight", f"a matrix with {len(w)} row", "at least two rows")
    norms = np.linalg.norm(w, axis=1)
    if (norms == 0).any():
        zero = np.flatnonzero(norms == 0).tolist()
        raise ParameterError("weight", f"a matrix with zero rows {zero}", "non-zero rows")
    u = w / norms[:, None]
    n = len(u)
    # Sum of all cosines = ‖Σ u_i‖²; remove the n diagonal ones, average the rest.
    total = float((u.sum(axis=0) ** 2).sum())
    return (total - n) / (n * (n - 1))


def effective_rank(weight: ArrayLike, center: bool = True) -> float:
    """exp of the entropy of the normalized singular values (Roy & Vetterli, 2007).

    Between 1 (rank one) and min(n, d) (all singular values equal). With
    ``center`` the column means are removed first, so a common offset shared
    by every row does not count as a direction. A zero matrix has effective
    rank 0.
    """
    w = _matrix(weight)
    if center:
        w = w - w.mean(axis=0)
    s = np.linalg.svd(w, compute_uv=False)
    if s.sum() == 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


@dataclass(frozen=True)
class Isotropy:
    """Partition-function isotropy and how many directions it was computed over."""

    value: float  # I(W) = min_c Z(c) / max_c Z(c), in (0, 1]
    n_directions: int  # eigenvectors with a non-zero eigenvalue (each used with both signs)
    n_zero: int  # eigenvectors of WᵀW whose eigenvalue is zero, left out


def partition_isotropy(weight: ArrayLike, rtol: float = ZERO_EIGENVALUE_RTOL) -> Isotropy:
    """I(W) = min_c Z(c) / max_c Z(c), Z(c) = Σ_i exp(c · w_i) (Mu & Viswanath, 2018).

    c runs over the unit eigenvectors of WᵀW (d × d) whose eigenvalue exceeds
    ``rtol`` times the largest, each with both signs (u and −u are both unit
    eigenvectors; taking both makes the value independent of the sign the
    eigensolver returns). WᵀW has rank at most min(n, d), so a matrix with
    fewer rows than dimensions has at least d − n zero directions: along them
    every w_i · c is 0 and Z(c) = n carries no information, so they are left
    out and counted in ``n_zero``. I(W) depends on the scale of W: pass a
    normalized matrix to compare models. Z is computed in log space.
    """
    w = _matrix(weight)
    rtol = check_float("rtol", rtol, 0.0, 1.0)
    eigvals, eigvecs = np.linalg.eigh(w.T @ w)
    keep = eigvals > rtol * eigvals.max()
    if not keep.any():
        raise ParameterError("weight", "a zero matrix", "a matrix with a non-zero row")
    c = eigvecs[:, keep]
    directions = np.concatenate([c, -c], axis=1)
    log_z = logsumexp(w @ directions, axis=0)
    value = float(np.exp(log_z.min() - log_z.max()))
    return Isotropy(value, int(keep.sum()), int((~keep).sum()))


# --- the unigram probe ------------------------------------------------------------------


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


# --- per model and over seeds -----------------------------------------------------------


def model_weights(runs: Mapping, base_vocab_size: int, include_initial: bool = True) -> dict:
    """{(objective, seed): embedding matrix} of a grid of runs, objective 'CE' or 'HNS'
    (the run's family); with ``include_initial`` also ('initial', seed): the matrix
    a run of that seed starts from (the same for both objectives)."""
    from ..engine.training import initial_model

    out: dict = {}
    for run in runs.values():
        seed = run.config.seed
        out[(run.config.family, seed)] = as_array(run.model().embedding)
        if include_initial and ("initial", seed) not in out:
            out[("initial", seed)] = as_array(initial_model(run.config, base_vocab_size).embedding)
    return dict(sorted(out.items(), key=lambda kv: (OBJECTIVES.index(kv[0][0]), kv[0][1])))


def _language_rows(info: pd.DataFrame, language: str) -> pd.DataFrame:
    return info[info["language"] == language]


def geometry_metrics(weight: ArrayLike, token_info: pd.DataFrame, n_rare: int = 5) -> dict:
    """Every scalar of ``METRICS`` but the probe's for one matrix, plus ``n_zero``
    (zero-eigenvalue directions left out of I(W)).

    Distances and I(W) are computed on the scale-normalized matrix. Metrics that
    need the low-resource language are NaN for a single-language matrix.
    """
    w = _matrix(weight)
    info = token_info.sort_values("token").reset_index(drop=True)
    if len(info) != len(w) or not (info["token"].to_numpy() == np.arange(len(w))).all():
        raise ParameterError(
            "token_info", f"a table of {len(info)} tokens", f"one row per token 0..{len(w) - 1}"
        )
    rare = set(rarest_base_tokens(info, n_rare))
    w_norm = normalized(w)
    norms = np.linalg.norm(w_norm, axis=1)
    out: dict = {}
    high, low = _language_rows(info, "high"), _language_rows(info, "low")
    if len(low):
        twins = high.merge(low, on="base_token", suffixes=("_h", "_l"))
        d = np.linalg.norm(w_norm[twins["token_h"]] - w_norm[twins["token_l"]], axis=1)
        out["twin_distance"] = float(d.mean())
        out["language_centroid_distance"] = centroid_distance(w, high["token"], low["token"])
    else:
        out["twin_distance"] = out["language_centroid_distance"] = math.nan
    for language, rows in (("high", high), ("low", low)):
        is_rare = rows["base_token"].isin(rare)
        if len(rows) and is_rare.any() and (~is_rare).any():
            out[f"rare_centroid_distance_{language}"] = centroid_distance(
                w, rows.loc[is_rare, "token"], rows.loc[~is_rare, "token"]
            )
            rho = st.spearmanr(norms[rows["token"]], rows["rank"]).statistic
            out[f"norm_rank_spearman_{language}"] = float(rho)
        else:
            out[f"rare_centroid_distance_{language}"] = math.nan
            out[f"norm_rank_spearman_{language}"] = math.nan
    out["mean_cosine"] = mean_pairwise_cosine(w)
    out["effective_rank"] = effective_rank(w)
    iso = partition_isotropy(w_norm)
    out["isotropy"], out["n_zero"] = iso.value, iso.n_zero
    return out


def metrics_table(
    weights: Mapping,
    token_info: pd.DataFrame,
    target: ArrayLike,
    *,
    n_rare: int = 5,
    **probe: Any,
) -> pd.DataFrame:
    """One row per (objective, seed) of ``weights`` (see ``model_weights``): every
    metric of ``METRICS``, ``n_zero`` and ``n_rows``, ``n_dims``. ``probe`` passes
    steps, lr and seed to ``probe_unigram`` (one batched fit for all matrices)."""
    keys = list(weights)
    stack = np.stack([as_array(weights[k]) for k in keys])
    fit = probe_unigram(stack, target, **probe)
    rows = []
    for k, key in enumerate(keys):
        objective, seed = key
        row = {"objective": objective, "seed": seed}
        row.update(geometry_metrics(stack[k], token_info, n_rare))
        row["probe_kl"] = float(fit.kl[k])
        row["n_rows"], row["n_dims"] = stack.shape[1], stack.shape[2]
        rows.append(row)
    return pd.DataFrame(rows)


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


def norm_table(weights: Mapping, token_info: pd.DataFrame) -> pd.DataFrame:
    """Per objective and token: the row norm in units of the scale, mean over seeds with
    its 95% interval (columns norm, norm_lo, norm_hi, n_seeds), with rank and language."""
    info = token_info.sort_values("token").reset_index(drop=True)
    frames = []
    for (objective, seed), weight in weights.items():
        part = info[["token", "symbol", "display", "rank", "language"]].copy()
        part["objective"], part["seed"], part["norm"] = objective, seed, row_norms(weight)
        frames.append(part)
    per_seed = pd.concat(frames, ignore_index=True)
    keys = ["objective", "token", "symbol", "display", "rank", "language"]
    return aggregate_seeds(per_seed, keys, ["norm"])


def long_metrics(per_seed: pd.DataFrame) -> pd.DataFrame:
    """``metrics_table`` in long form: objective, seed, metric, label, value."""
    present = [m for m in METRICS if m in per_seed and per_seed[m].notna().any()]
    long = per_seed.melt(["objective", "seed"], present, var_name="metric", value_name="value")
    long["label"] = long["metric"].map(lambda m: METRICS[m][0])
    return long


def summarize(per_seed: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Means with 95% intervals over seeds per objective and metric, and HNS minus CE
    per metric paired by seed (columns diff, diff_lo, diff_hi, n_pairs, direction)."""
    long = long_metrics(per_seed)
    means = aggregate_seeds(long, ["objective", "metric", "label"], ["value"])
    diffs = paired_difference(long, ["metric", "label"], "value", "objective", "HNS", "CE")
    diffs["direction"] = [
        compare(lo, hi) for lo, hi in zip(diffs["diff_lo"], diffs["diff_hi"], strict=True)
    ]
    return means, diffs


def for_seed(weights: Mapping, seed: int, objectives: Sequence[str] = ("CE", "HNS")) -> dict:
    """{objective: matrix} of one seed from ``model_weights``'s dict."""
    missing = [o for o in objectives if (o, seed) not in weights]
    if missing:
        seeds = sorted({s for _, s in weights})
        raise ParameterError("seed", seed, f"one of the seeds with every model: {seeds}")
    return {o: weights[(o, seed)] for o in objectives}


def comparison_table(
    means: pd.DataFrame, diffs: pd.DataFrame, metrics: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per metric (``summarize``'s outputs): each model's mean with its 95%
    interval as text, HNS − CE with its paired interval, and the direction."""
    metrics = list(diffs["metric"]) if metrics is None else list(metrics)
    m = means.set_index(["objective", "metric"])
    d = diffs.set_index("metric")

    def cell(mean: float, lo: float, hi: float, sign: str = "") -> str:
        if math.isnan(lo) or math.isnan(hi):
            return f"{mean:{sign}.3g}"
        return f"{mean:{sign}.3g} [{lo:{sign}.3g}, {hi:{sign}.3g}]"

    rows = []
    for metric in metrics:
        if metric not in d.index:
            continue
        row = {"metric": METRICS[metric][0]}
        for obj in OBJECTIVES:
            if (obj, metric) in m.index:
                r = m.loc[(obj, metric)]
                row[obj] = cell(r["value"], r["value_lo"], r["value_hi"])
        r = d.loc[metric]
        row["HNS − CE"] = cell(r["diff"], r["diff_lo"], r["diff_hi"], "+")
        row["direction"] = r["direction"]
        row["a larger value means"] = METRICS[metric][1]
        rows.append(row)
    return pd.DataFrame(rows)


def isotropy_note(per_seed: pd.DataFrame) -> str:
    """Markdown: the shape of the matrices and how many zero-eigenvalue directions of
    WᵀW were left out of I(W), per model (from ``metrics_table``)."""
    n, d = int(per_seed["n_rows"].iloc[0]), int(per_seed["n_dims"].iloc[0])
    zero = per_seed.groupby("objective", sort=False)["n_zero"].agg(["min", "max"])
    counts = ", ".join(
        f"{obj}: {lo}" if lo == hi else f"{obj}: {lo} to {hi}"
        for obj, lo, hi in zip(zero.index, zero["min"], zero["max"], strict=True)
    )
    bound = max(0, d - n)
    return (
        f"Here every W is {n} × {d}, so WᵀW is {d} × {d} with rank at most "
        f"min({n}, {d}) = {min(n, d)}: at least {bound} of its {d} eigenvalues must be zero. "
        f"An eigenvalue counts as zero at or below {ZERO_EIGENVALUE_RTOL:g} times the largest. "
        f"Zero-eigenvalue directions found and left out of I(W), per model over seeds: "
        f"{counts}."
    )


def probe_note(per_seed: pd.DataFrame, steps: int = PROBE_STEPS, lr: float = PROBE_LR) -> str:
    """Markdown: whether the probe could fit any matrix exactly at this shape, and its
    budget (from ``metrics_table``)."""
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


# --- the reading ------------------------------------------------------------------------


@dataclass
class GeometryReading:
    """What the numbers say: Markdown for the notebook and a JSON-safe summary."""

    text: str
    summary: dict


_CLOSER = {"lower": "closer", "higher": "farther", "indistinguishable": "indistinguishable"}


def _fmt_ci(lo: float, hi: float) -> str:
    if math.isnan(lo) or math.isnan(hi):
        return "no interval: fewer than two seeds"
    return f"95% CI {lo:+.3g} to {hi:+.3g}"


def reading(
    per_seed: pd.DataFrame,
    means: pd.DataFrame,
    diffs: pd.DataFrame,
    base_vocab_size: int,
    n_rare: int = 5,
) -> GeometryReading:
    """Does HNS bring the languages and the rare symbols closer than CE does, and how do
    isotropy and the unigram probe differ? Verdicts come from the paired 95% intervals
    of HNS minus CE (``summarize``); 'indistinguishable' when the interval holds 0."""
    m = means.set_index(["objective", "metric"])
    d = diffs.set_index("metric")
    n_pairs = int(d["n_pairs"].min()) if len(d) else 0
    summary: dict = {
        "n_seeds": n_pairs,
        "metrics": {},
        "verdicts": {},
        "zero_directions": {
            obj: int(per_seed.loc[per_seed["objective"] == obj, "n_zero"].max())
            for obj in OBJECTIVES
            if (per_seed["objective"] == obj).any()
        },
        "shape": [int(per_seed["n_rows"].iloc[0]), int(per_seed["n_dims"].iloc[0])],
    }
    for metric in d.index:
        entry = {
            obj: {
                "mean": m.loc[(obj, metric), "value"],
                "ci": [m.loc[(obj, metric), "value_lo"], m.loc[(obj, metric), "value_hi"]],
            }
            for obj in OBJECTIVES
            if (obj, metric) in m.index
        }
        row = d.loc[metric]
        entry["hns_minus_ce"] = {
            "diff": row["diff"],
            "ci": [row["diff_lo"], row["diff_hi"]],
            "direction": row["direction"],
        }
        summary["metrics"][metric] = entry

    def verdict(metric: str, words: Mapping[str, str]) -> str:
        row = d.loc[metric]
        ce, hns = m.loc[("CE", metric), "value"], m.loc[("HNS", metric), "value"]
        word = words[row["direction"]]
        summary["verdicts"][metric] = word
        return (
            f"CE {ce:.3g}, HNS {hns:.3g} (HNS − CE {row['diff']:+.3g}, "
            f"{_fmt_ci(row['diff_lo'], row['diff_hi'])}): **{word}**"
        )

    lines = [
        f"Over {n_pairs} paired seed{'s' if n_pairs != 1 else ''}, with distances in units "
        "of each matrix's scale:",
        "",
    ]
    moved: dict[str, list[str]] = {"closer": [], "farther": [], "indistinguishable": []}
    subjects = {
        "twin_distance": (
            f"**Twins** (*i*, *i* + {base_vocab_size}), mean distance",
            "the twins",
        ),
        "language_centroid_distance": (
            "**Language centroids**, distance",
            "the two languages' centroids",
        ),
        "rare_centroid_distance_high": (
            f"**The {n_rare} rarest symbols, high-resource language**, distance of their "
            "centroid from the rest of the language",
            "the rare high-resource symbols to the rest of their language",
        ),
        "rare_centroid_distance_low": (
            f"**The {n_rare} rarest symbols, low-resource language**, distance of their "
            "centroid from the rest of the language",
            "the rare low-resource symbols to the rest of their language",
        ),
    }
    for metric, (title, name) in subjects.items():
        if metric in d.index:
            lines.append(f"- {title}: {verdict(metric, _CLOSER)}.")
            moved[summary["verdicts"][metric]].append(name)
    iso_words = {
        "mean_cosine": ("mean pairwise cosine", {"lower": "lower", "higher": "higher"}),
        "effective_rank": ("effective rank", {"lower": "lower", "higher": "higher"}),
        "isotropy": ("I(W)", {"lower": "less isotropic", "higher": "more isotropic"}),
    }
    iso = [
        f"{label} {verdict(metric, {'indistinguishable': 'indistinguishable', **words})}"
        for metric, (label, words) in iso_words.items()
        if metric in d.index
    ]
    if iso:
        rows, dims = summary["shape"]
        zero = ", ".join(f"{k} {v}" for k, v in summary["zero_directions"].items())
        lines.append(
            "- **Isotropy**: " + "; ".join(iso) + f". (I(W) on the scale-normalized {rows} × "
            f"{dims} matrices; zero-eigenvalue directions left out: {zero}.)"
        )
    if "probe_kl" in d.index:
        probe_words = {
            "lower": "HNS encodes unigram frequency more closely",
            "higher": "CE encodes unigram frequency more closely",
            "indistinguishable": "indistinguishable",
        }
        start = ""
        if ("initial", "probe_kl") in m.index:
            start = f"; {m.loc[('initial', 'probe_kl'), 'value']:.3g} at initialization"
        lines.append(
            "- **Unigram probe**, KL(f ‖ softmax(W x)) in nats: "
            + verdict("probe_kl", probe_words)
            + start
            + "."
        )

    def listed(names: list[str]) -> str:
        return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]

    # Every item names a pair without 'and', so the list reads unambiguously.
    openings = {
        "closer": "HNS brings closer than CE does: ",
        "farther": "HNS sets farther apart than CE does: ",
        "indistinguishable": "CE and HNS cannot be told apart for ",
    }
    short = [openings[word] + listed(names) for word, names in moved.items() if names]
    lines += [
        "",
        ("**In short:** " + "; ".join(short) + ".") if short else "",
        "",
        "*Closer* or *farther* (and *higher* or *lower*) means the whole 95% interval of the "
        "paired difference lies below or above zero; otherwise the objectives are "
        "*indistinguishable* at this number of seeds.",
    ]
    return GeometryReading("\n".join(lines), summary)
