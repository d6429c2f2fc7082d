"""Shared fixtures: the real corpus (from SELFISH_DATA, the cache or its URL),
a small synthetic corpus with a skewed symbol distribution, isolated results
folders, and the smoke reproduction (every notebook executed once per session,
shared by the notebook and browser tests)."""

from __future__ import annotations

import random
from pathlib import Path

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


@pytest.fixture(scope="session")
def smoke_reproduction(tmp_path_factory) -> Path:
    """Every notebook executed through the pipeline in the smoke profile, once per session
    (a few minutes): returns the folder holding ``reports/smoke/`` and ``results/``."""
    from selfish_lib.report import pipeline

    root = tmp_path_factory.mktemp("reproduce")
    htmls = pipeline.run_pipeline(
        profile="smoke",
        device="cpu",
        reports_dir=root / "reports",
        results_dir=root / "results",
        progress=False,
        jobs=2,  # the runs of a smoke reproduction train in two processes (CI has 2 cores)
    )
    names = sorted(pipeline.available_notebooks())
    assert htmls == [root / "reports" / "smoke" / f"{name}.html" for name in names]
    return root


@pytest.fixture(scope="session")
def smoke_report(smoke_reproduction) -> Path:
    """The smoke report folder: NN_name.ipynb and .html, figures/, summary.json."""
    return smoke_reproduction / "reports" / "smoke"


@pytest.fixture(scope="session")
def smoke_results(smoke_reproduction) -> Path:
    """The run store the smoke reproduction trained into (its runs are complete)."""
    return smoke_reproduction / "results"
