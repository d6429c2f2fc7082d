"""Packaging stays consistent: pyproject.toml and environment.yml list the same
dependencies, jupytext pairs notebooks with py:percent scripts, and git ignores
the generated files."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def normalize(requirement: str) -> str:
    """'Scikit-Learn >= 1.3' -> 'scikit-learn>=1.3' (PEP 503 name, no spaces)."""
    req = requirement.replace(" ", "")
    match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(.*)$", req)
    assert match, f"not a requirement: {requirement!r}"
    name, rest = match.groups()
    return re.sub(r"[-_.]+", "-", name).lower() + rest


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)


def conda_pip_list() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1, "environment.yml should have exactly one pip: section"
    return [str(r) for r in pip_lists[0]]


def test_normalize():
    assert normalize("Scikit_Learn >= 1.3") == "scikit-learn>=1.3"
    assert normalize("vl-convert-python>=1.3") == "vl-convert-python>=1.3"


def test_pyproject_dependencies_equal_environment_yml_pip_list():
    project = pyproject()["project"]
    declared = list(project["dependencies"]) + list(project["optional-dependencies"]["dev"])
    pip = [r for r in conda_pip_list() if r.replace(" ", "") != "-e."]
    assert len(pip) == len(conda_pip_list()) - 1, "environment.yml should install '-e .'"
    py_set = {normalize(r) for r in declared}
    env_set = {normalize(r) for r in pip}
    assert len(py_set) == len(declared), "duplicate requirement in pyproject.toml"
    assert len(env_set) == len(pip), "duplicate requirement in environment.yml"
    assert py_set == env_set, (
        f"only in pyproject.toml: {sorted(py_set - env_set)}; "
        f"only in environment.yml: {sorted(env_set - py_set)}"
    )


def test_dev_extra_has_the_test_tools():
    extra = pyproject()["project"]["optional-dependencies"]["dev"]
    dev = {re.split(r"[<>=!~;\[]", normalize(r))[0] for r in extra}
    assert {"pytest", "ruff"} <= dev


def test_jupytext_pairs_notebooks_with_py_percent():
    # Beside the notebooks, so that the command line and JupyterLab rooted at the
    # repository or at notebooks/ all find it (tests/test_lab_roundtrip.py).
    text = (ROOT / "notebooks" / "jupytext.toml").read_text(encoding="utf-8")
    config = tomllib.loads(text)
    pairs = {f.strip() for f in config["formats"].split(",")}
    assert pairs == {"ipynb", "py:percent"}
    kept = config["notebook_metadata_filter"].split(",")
    assert "kernelspec" in kept and "-all" in kept


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
@pytest.mark.parametrize(
    "path",
    ["notebooks/example.ipynb", "results/run-0/metrics.json", "reports/figure.png"],
)
def test_gitignore_ignores_generated_files(path):
    proc = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode == 128:
        pytest.skip(f"not a usable git work tree: {proc.stderr.strip()}")
    assert proc.returncode == 0, f"{path} is not ignored by .gitignore"


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
@pytest.mark.parametrize(
    "path", ["notebooks/example.py", "selfish_lib/model.py", "pyproject.toml", "environment.yml"]
)
def test_gitignore_keeps_sources(path):
    proc = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode == 128:
        pytest.skip(f"not a usable git work tree: {proc.stderr.strip()}")
    assert proc.returncode == 1, f"{path} should not be ignored"
