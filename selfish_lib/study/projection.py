"""The embedding matrix in two dimensions: PCA and t-SNE of the scale-normalized rows,
with the rarest symbols marked.

Both projections work on ``matrix.normalized`` rows, so two models share axes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from ..engine.validation import ParameterError, check_float, check_int
from .matrix import ArrayLike, check_matrix, normalized

PROJECTIONS = ("PCA", "t-SNE")


def pca_2d(weight: ArrayLike, seed: int = 0) -> np.ndarray:
    """(n, 2) principal-component coordinates of the scale-normalized rows.

    Signs are fixed (the largest-magnitude loading of each component is made
    positive) so that the same matrix always gives the same picture.
    """
    from sklearn.decomposition import PCA  # deferred: scikit-learn is slow to import

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
    from sklearn.manifold import TSNE  # deferred: scikit-learn is slow to import

    w = normalized(weight)
    perplexity = check_perplexity(perplexity, len(w))
    seed = check_int("seed", seed, 0)
    # 'exact' rather than Barnes-Hut: for a few hundred rows it is as fast and has no
    # approximation. One BLAS/OpenMP thread: for so small a problem extra threads only
    # contend (tens of times slower on a busy two-core machine).
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
        w = check_matrix(weight)
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
