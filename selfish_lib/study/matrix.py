"""Measures of one embedding matrix: its scale, distances between rows, isotropy.

Matrices are compared after dividing by their *scale*, the root mean square
of their row norms, so that models whose embeddings grew to different sizes
are drawn and measured on comparable axes. Every distance and the
partition-function isotropy below is computed on the scale-normalized matrix;
cosines and the effective rank do not depend on the scale.

Rows are tokens; nothing here needs to know which token a row is (the chapter,
``geometry``, brings the token tables).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import logsumexp

from ..engine.validation import ParameterError, check_float, check_int

ArrayLike = torch.Tensor | np.ndarray
# Eigenvalues of WᵀW at or below this fraction of the largest count as zero.
ZERO_EIGENVALUE_RTOL = 1e-10


# --- scale ----------------------------------------------------------------------------


def as_array(weight: ArrayLike) -> np.ndarray:
    """A float64 numpy copy of an embedding matrix (rows = tokens)."""
    if isinstance(weight, torch.Tensor):
        weight = weight.detach().cpu().double().numpy()
    return np.array(weight, dtype=np.float64)


def check_matrix(weight: ArrayLike, name: str = "weight") -> np.ndarray:
    """A float64 copy of ``weight``, checked to be a non-empty, finite 2-D matrix."""
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


# --- distances ------------------------------------------------------------------------


def row_norms(weight: ArrayLike) -> np.ndarray:
    """Norm of each row of the scale-normalized matrix (root mean square 1)."""
    return np.linalg.norm(normalized(weight), axis=1)


def twin_distance(weight: ArrayLike, n_base: int) -> float:
    """Mean distance between rows i and i + ``n_base`` (the twins), in units of the scale."""
    w = check_matrix(weight)
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
    w = normalized(check_matrix(weight))
    a, b = np.asarray(rows_a, dtype=int), np.asarray(rows_b, dtype=int)
    for name, rows in (("rows_a", a), ("rows_b", b)):
        if rows.size == 0 or rows.min() < 0 or rows.max() >= len(w):
            raise ParameterError(
                name, rows.tolist(), f"a non-empty list of rows in 0..{len(w) - 1}"
            )
    return float(np.linalg.norm(w[a].mean(axis=0) - w[b].mean(axis=0)))


# --- isotropy -------------------------------------------------------------------------


def mean_pairwise_cosine(weight: ArrayLike) -> float:
    """Mean cosine similarity over all pairs of distinct rows (0 for an orthogonal set,
    near 1 when every row points the same way)."""
    w = check_matrix(weight)
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
    w = check_matrix(weight)
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
    w = check_matrix(weight)
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
