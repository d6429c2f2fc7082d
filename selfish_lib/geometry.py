"""Embedding geometry: projections of the tied embedding matrix.

Matrices are compared after dividing by their *scale*, the root mean square
of their row norms, so that models whose embeddings grew to different sizes
are drawn and measured on comparable axes.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.decomposition import PCA


def as_array(weight: torch.Tensor | np.ndarray) -> np.ndarray:
    """A float64 numpy copy of an embedding matrix (rows = tokens)."""
    if isinstance(weight, torch.Tensor):
        weight = weight.detach().cpu().double().numpy()
    return np.array(weight, dtype=np.float64)


def scale(weight: torch.Tensor | np.ndarray) -> float:
    """Root mean square of the row norms."""
    w = as_array(weight)
    return float(np.sqrt((w**2).sum(axis=1).mean()))


def normalized(weight: torch.Tensor | np.ndarray) -> np.ndarray:
    """The matrix divided by its scale (rows have unit root-mean-square norm)."""
    w = as_array(weight)
    return w / scale(w)


def pca_2d(weight: torch.Tensor | np.ndarray, seed: int = 0) -> np.ndarray:
    """(n, 2) principal-component coordinates of the scale-normalized rows.

    Signs are fixed (the largest-magnitude loading of each component is made
    positive) so that the same matrix always gives the same picture.
    """
    w = normalized(weight)
    pca = PCA(n_components=2, random_state=seed)
    coords = pca.fit_transform(w)
    for k in range(2):
        if pca.components_[k][np.argmax(np.abs(pca.components_[k]))] < 0:
            coords[:, k] *= -1
    return coords
