"""The notebook pairs: each ``notebooks/NN_name.py`` (the source) and its generated
``NN_name.ipynb`` stay one notebook wherever they are edited.

- ``make sync`` (``jupytext --sync notebooks/*.py``) finds ``notebooks/jupytext.toml``
  and writes an ``.ipynb`` that carries the python3 kernelspec;
- a notebook saved in JupyterLab writes its ``.py``, whether Lab's root is the
  repository or ``notebooks/`` (jupytext's contents manager, as Lab uses it);
- plain ``papermill NN_name.ipynb out.ipynb -p ...`` runs it without ``-k``;
- ``make clean`` deletes no ``.ipynb`` that is newer than its ``.py`` (or has none).

Everything runs on a copy of the notebooks in a temporary folder laid out like the
repository, never on the repository's own notebooks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "01_hypothesis"  # trains nothing: quick to execute
# Every file jupytext reads its configuration from, at the root or in notebooks/.
CONFIG_FILES = ("jupytext.toml", ".jupytext.toml", "jupytext.yml", "jupytext.json", ".jupytext")

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def copy_layout(repo: Path, names: tuple[str, ...] = (NOTEBOOK,)) -> Path:
    """The repository's jupytext configuration and the notebooks ``names`` under ``repo``."""
    (repo / "notebooks").mkdir(parents=True)
    for folder in (ROOT, ROOT / "notebooks"):
        for config in CONFIG_FILES:
            if (folder / config).exists():
                shutil.copy2(folder / config, repo / folder.relative_to(ROOT) / config)
    if (ROOT / "pyproject.toml").exists():  # may hold a [tool.jupytext] table
        shutil.copy2(ROOT / "pyproject.toml", repo / "pyproject.toml")
    for name in names:
        shutil.copy2(ROOT / "notebooks" / f"{name}.py", repo / "notebooks" / f"{name}.py")
    return repo


def sync(repo: Path) -> None:
    """What ``make sync`` runs, from the root of ``repo``."""
    sources = sorted(str(p.relative_to(repo)) for p in (repo / "notebooks").glob("*.py"))
    subprocess.run(
        [sys.executable, "-m", "jupytext", "--sync", *sources],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    )


@pytest.fixture
def repo(tmp_path) -> Path:
    repo = copy_layout(tmp_path / "repo")
    sync(repo)
    return repo


def test_every_notebook_source_names_the_python3_kernel():
    sources = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    assert sources
    for path in sources:
        kernelspec = jupytext.read(path).metadata.get("kernelspec", {})
        assert kernelspec.get("name") == "python3", path.name
        assert kernelspec.get("language") == "python", path.name


def test_sync_writes_an_ipynb_that_carries_the_kernelspec(repo):
    ipynb = repo / "notebooks" / f"{NOTEBOOK}.ipynb"
    nb = nbformat.read(ipynb, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert nb.metadata["kernelspec"]["language"] == "python"
    assert os.stat(ipynb).st_mtime_ns <= os.stat(ipynb.with_suffix(".py")).st_mtime_ns


@pytest.mark.parametrize("lab_root", [".", "notebooks"], ids=["lab-at-repo", "lab-at-notebooks"])
def test_saving_the_ipynb_in_lab_writes_the_py(repo, lab_root):
    from jupytext import TextFileContentsManager

    root = repo / lab_root
    path = (repo / "notebooks" / f"{NOTEBOOK}.ipynb").relative_to(root).as_posix()
    py = repo / "notebooks" / f"{NOTEBOOK}.py"
    before = py.read_text(encoding="utf-8")

    manager = TextFileContentsManager(root_dir=str(root))
    nb = manager.get(path)["content"]
    marker = f"An edit saved in Lab rooted at {lab_root}."
    nb.cells[0].source += "\n\n" + marker
    # Lab also saves what the running kernel reports: none of it belongs in the .py.
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.0"}
    manager.save({"type": "notebook", "content": nb}, path)

    after = py.read_text(encoding="utf-8")
    assert after != before
    assert f"# {marker}" in after
    assert "language_info" not in after
    assert jupytext.read(py).metadata["kernelspec"]["name"] == "python3"
    ipynb = py.with_suffix(".ipynb")
    assert marker in nbformat.read(ipynb, as_version=4).cells[0].source
    # The .py is written last, so `make clean` takes the pair as in step.
    assert os.stat(ipynb).st_mtime_ns <= os.stat(py).st_mtime_ns


def test_plain_papermill_runs_the_synced_ipynb_without_a_kernel_option(repo, tmp_path):
    ipynb = repo / "notebooks" / f"{NOTEBOOK}.ipynb"
    out = tmp_path / "out.ipynb"
    proc = subprocess.run(
        [sys.executable, "-m", "papermill", str(ipynb), str(out), "-p", "profile", "smoke"]
        + ["-p", "results_dir", str(tmp_path / "results"), "--cwd", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    executed = nbformat.read(out, as_version=4)
    assert executed.metadata["papermill"]["parameters"]["profile"] == "smoke"
    outputs = [o for cell in executed.cells for o in cell.get("outputs", [])]
    assert outputs and not any(o.get("output_type") == "error" for o in outputs)


# --- make clean ---------------------------------------------------------------------------


def pair(folder: Path, name: str, ipynb_minus_py_s: float | None) -> Path:
    """``name.py`` and ``name.ipynb`` in ``folder``, the .ipynb that many seconds newer
    than the .py (None: no .py at all); returns the .ipynb."""
    py, ipynb = folder / f"{name}.py", folder / f"{name}.ipynb"
    ipynb.write_text("{}", encoding="utf-8")
    if ipynb_minus_py_s is None:
        return ipynb
    py.write_text("# %%\n", encoding="utf-8")
    t = os.stat(py).st_mtime_ns
    os.utime(ipynb, ns=(t, t + int(ipynb_minus_py_s * 1e9)))
    return ipynb


def make_clean(repo: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run(
        ["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), "clean"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_make
@pytest.mark.parametrize("newer_s", [0.5, 3600.0])
def test_make_clean_keeps_an_ipynb_newer_than_its_py_and_stops(tmp_path, newer_s):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    (tmp_path / "reports").mkdir()
    edited = pair(notebooks, "01_a", newer_s)
    generated = pair(notebooks, "02_b", -1.0)
    proc = make_clean(tmp_path)
    assert proc.returncode != 0
    assert "notebooks/01_a.ipynb is newer than notebooks/01_a.py" in proc.stderr
    assert "02_b" not in proc.stderr
    assert edited.exists() and generated.exists()
    assert (tmp_path / "reports").exists(), "nothing is removed when clean stops"


@needs_make
def test_make_clean_keeps_an_ipynb_without_a_py(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    orphan = pair(notebooks, "07_new", None)
    proc = make_clean(tmp_path)
    assert proc.returncode != 0
    assert "notebooks/07_new.ipynb has no notebooks/07_new.py" in proc.stderr
    assert orphan.exists()


@needs_make
def test_make_clean_removes_ipynb_not_newer_than_their_py(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    (tmp_path / "reports").mkdir()
    older, same = pair(notebooks, "01_a", -2.0), pair(notebooks, "02_b", 0.0)
    proc = make_clean(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not older.exists() and not same.exists()
    assert (notebooks / "01_a.py").exists() and (notebooks / "02_b.py").exists()
    assert not (tmp_path / "reports").exists()


@needs_make
def test_make_clean_removes_a_pair_saved_in_lab(repo):
    from jupytext import TextFileContentsManager

    manager = TextFileContentsManager(root_dir=str(repo / "notebooks"))
    model = manager.get(f"{NOTEBOOK}.ipynb")
    manager.save({"type": "notebook", "content": model["content"]}, f"{NOTEBOOK}.ipynb")
    proc = make_clean(repo)
    assert proc.returncode == 0, proc.stderr
    assert not (repo / "notebooks" / f"{NOTEBOOK}.ipynb").exists()
    assert (repo / "notebooks" / f"{NOTEBOOK}.py").exists()
