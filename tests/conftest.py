"""Shared fixtures: the CPU as the device 'auto' resolves to, the real corpus (from
SELFISH_DATA, the cache or its URL), a small synthetic corpus with a skewed symbol
distribution, isolated results folders, runs rewritten in the previous version's store
format, and the smoke reproduction (every notebook executed once per session, shared by
the notebook and browser tests)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

# The default test run never trains on a GPU: device='auto' resolves to the CPU in this
# process and in every process it starts (workers, Ray tasks, the Ctrl-C child);
# tests/test_cuda.py asks for CUDA by name.
os.environ["SELFISH_AUTO_DEVICE"] = "cpu"

from selfish_lib.engine.corpus import Corpus, load_corpus  # noqa: E402


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


def _store_in_earlier_format(run: Path) -> None:
    """Rewrite a finished run folder as the previous version stored it: each table a
    gzipped CSV at 10 significant digits, a manifest without the device."""
    import json

    from selfish_lib.engine.corpus import sha256_of
    from selfish_lib.engine.runs import MANIFEST, MARKER, TABLES, read_table

    for name in TABLES:
        read_table(run, name).to_csv(run / f"{name}.csv.gz", index=False, float_format="%.10g")
        (run / f"{name}.npz").unlink()
    manifest = json.loads((run / MANIFEST).read_text())
    del manifest["device"]
    manifest["files"] = {
        p.name: {"size": p.stat().st_size, "sha256": sha256_of(p)}
        for p in sorted(run.iterdir())
        if p.is_file() and p.name not in (MANIFEST, MARKER, "lock")
    }
    (run / MANIFEST).write_text(json.dumps(manifest, indent=2))


@pytest.fixture
def earlier_format():
    """A function that rewrites a finished run folder in the previous version's format
    (tables as CSV, no device in the manifest): the runs stored before must still load."""
    return _store_in_earlier_format
