"""Shared fixtures: the real corpus (from SELFISH_DATA, the cache or its URL),
a small synthetic corpus with a skewed symbol distribution, and isolated
results folders."""

from __future__ import annotations

import random

import pytest

from selfish_lib.engine.corpus import Corpus, load_corpus


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    """Tiny Shakespeare, verified."""
    return load_corpus()


def skewed_text(n: int = 6000, seed: int = 0) -> str:
    """A synthetic text over 12 symbols with Zipf-like frequencies (some rare)."""
    rng = random.Random(seed)
    symbols = list("etaoin shrdl")
    weights = [1.0 / (k + 1) ** 1.3 for k in range(len(symbols))]
    return "".join(rng.choices(symbols, weights=weights, k=n))


@pytest.fixture(scope="session")
def tiny_corpus() -> Corpus:
    """A small synthetic corpus for fast unit tests."""
    return Corpus.from_text(skewed_text())


@pytest.fixture
def results_dir(tmp_path):
    """An empty results folder for the run store."""
    path = tmp_path / "results"
    path.mkdir()
    return path
