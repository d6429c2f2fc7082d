"""Real-browser checks, in Debian's Chromium driven by Playwright (no browser is
downloaded: Playwright launches the system executable).

(a) Every smoke HTML report, opened from disk, draws every chart it declares with
    the inlined Vega-Embed, logs no console error and asks the network for nothing.
(b) JupyterLab, started on a temporary copy of notebook 06 whose run store is the
    smoke reproduction's: the notebook is run from the Run menu, the layout slider
    of the sweep explorer is moved with the keyboard, and the explorer's chart
    changes.

Marked ``browser``. Without Chromium (``SELFISH_CHROMIUM``, default
/usr/bin/chromium) or the playwright package they are skipped, unless
``SELFISH_REQUIRE_BROWSER=1`` (set by CI, which installs both), where they fail.
"""

from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from selfish_lib.engine.corpus import resolve_corpus_path
from selfish_lib.report import pipeline
from selfish_lib.report.paper.build import BROWSER_ARGS

CHROMIUM = Path(os.environ.get("SELFISH_CHROMIUM", "/usr/bin/chromium"))
REQUIRED = os.environ.get("SELFISH_REQUIRE_BROWSER", "") == "1"
CHROMIUM_ARGS = list(BROWSER_ARGS)  # headless, nothing reaching the network
NOTEBOOKS = sorted(pipeline.available_notebooks())
# A chart Vega-Embed has drawn: its view's SVG inside the wrapper it adds to the
# container (before that, the container holds vl-convert's static SVG directly).
DECLARED = "div.selfish-vega"
DRAWN = "div.selfish-vega > .chart-wrapper > svg.marks"
LOCAL_SCHEMES = ("file:", "data:", "blob:")
EXPLORER = "06_layout_explorer"


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    reasons = []
    if not CHROMIUM.is_file():
        reasons.append(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        reasons.append("the playwright package is not installed (pip install -e '.[dev]')")
    return "; ".join(reasons) or None


MISSING = missing_browser()
# Skipped before any fixture (the smoke reproduction takes minutes), unless required.
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(MISSING is not None and not REQUIRED, reason=MISSING or ""),
]


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium (failed, under SELFISH_REQUIRE_BROWSER=1, without one).

    Session-scoped, like the smoke reproduction, so that it is set up first."""
    if MISSING is not None:
        pytest.fail(f"SELFISH_REQUIRE_BROWSER=1 but {MISSING}", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class PageLog:
    """What a page did that a test forbids: console errors, uncaught exceptions and
    requests outside ``allowed`` (those are aborted, so nothing leaves the machine)."""

    def __init__(self, page, allowed) -> None:
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.allowed = allowed
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("websocket", self._websocket)
        page.route("**/*", self._route)

    def _console(self, message) -> None:
        if message.type == "error":
            self.errors.append(f"console.error: {message.text} ({message.location})")

    def _websocket(self, ws) -> None:
        if not self.allowed(ws.url):
            self.outside.append(ws.url)

    def _route(self, route) -> None:
        url = route.request.url
        if self.allowed(url):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()


# --- (a) the offline HTML reports --------------------------------------------------------


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_html_report_draws_every_chart_offline(browser, smoke_report, name):
    path = smoke_report / f"{name}.html"
    declared = path.read_text(encoding="utf-8").count('class="selfish-vega"')
    assert declared > 0, f"{path.name} declares no chart"
    context = browser.new_context()
    try:
        page = context.new_page()
        log = PageLog(page, lambda url: url.startswith(LOCAL_SCHEMES))
        page.goto(path.as_uri(), wait_until="load")
        assert page.locator(DECLARED).count() == declared
        deadline = time.monotonic() + 30
        drawn = 0
        while not log.errors and time.monotonic() < deadline:
            drawn = page.locator(DRAWN).count()
            if drawn >= declared:
                break
            page.wait_for_timeout(100)
        assert not log.outside, f"{path.name} asked the network for {log.outside}"
        assert drawn == declared and not log.errors, (
            f"{path.name}: {drawn} of {declared} charts drawn; errors: {log.errors}"
        )
        views = page.evaluate(
            """(sel) => Array.from(document.querySelectorAll(sel)).map(svg => ({
                width: svg.getBoundingClientRect().width,
                marks: svg.querySelectorAll("[class^='mark-']").length,
            }))""",
            DRAWN,
        )
        assert len(views) == declared
        for index, view in enumerate(views, 1):
            assert view["width"] > 0 and view["marks"] > 0, f"{path.name}: chart {index} is empty"
        assert not log.outside and not log.errors, (log.outside, log.errors)  # none later
    finally:
        context.close()


# --- (b) notebook 06 live in JupyterLab --------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lab_folder(root: Path, results: Path) -> Path:
    """``root`` laid out like the repository for notebook 06: ``notebooks/`` with its
    .ipynb (as jupytext pairs it) and ``results`` (the notebook's default run store,
    ``../results`` from the kernel's working folder) pointing at ``results``."""
    (root / "notebooks").mkdir(parents=True)
    nb = pipeline.read_notebook(pipeline.available_notebooks()[EXPLORER])
    # The kernel the pipeline runs (Lab would otherwise ask which one to start).
    nb.metadata["kernelspec"] = {
        "name": pipeline.KERNEL, "display_name": "Python 3", "language": "python"
    }  # fmt: skip
    nbformat.write(nb, root / "notebooks" / f"{EXPLORER}.ipynb")
    (root / "results").symlink_to(results, target_is_directory=True)
    return root


def lab_environment(home: Path) -> dict[str, str]:
    """The environment of a Lab whose configuration, settings and state stay in ``home``:
    no news or update checks (they would go to the network), every cell in the DOM."""
    dirs = {
        name: home / name.lower()
        for name in (
            "JUPYTER_CONFIG_DIR",
            "JUPYTER_RUNTIME_DIR",
            "JUPYTERLAB_SETTINGS_DIR",
            "JUPYTERLAB_WORKSPACES_DIR",
            "IPYTHONDIR",
        )
    }
    for path in dirs.values():
        path.mkdir(parents=True)
    config = {
        "LabApp": {
            "news_url": None,
            "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
        }
    }
    (dirs["JUPYTER_CONFIG_DIR"] / "jupyter_server_config.json").write_text(json.dumps(config))
    tracker = dirs["JUPYTERLAB_SETTINGS_DIR"] / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    env = {**os.environ, **{k: str(v) for k, v in dirs.items()}}
    env.pop("JUPYTER_PATH", None)
    # The corpus the smoke reproduction used, so the kernel never needs the network.
    env["SELFISH_DATA"] = str(resolve_corpus_path(download=False))
    return env


def wait_for_lab(process: subprocess.Popen, url: str, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"JupyterLab exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer {url} within {timeout} s:\n{log.read_text()}")


def stop(process: subprocess.Popen) -> None:
    """End the Lab this test started and its kernels (its own process group)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


KERNEL_IDLE = re.compile(r"\| Idle$")  # the status bar's kernel item
STDERR = "application/vnd.jupyter.stderr"  # a traceback or a warning
# Every code cell numbered (none pending), or something written to stderr.
RUN_FINISHED = """(n) => {
    const prompts = Array.from(document.querySelectorAll(
        ".jp-Notebook .jp-CodeCell .jp-InputPrompt"));
    const done = prompts.length === n
        && prompts.every(p => /^\\[\\d+\\]:$/.test(p.textContent.trim()));
    const failed = document.querySelector(
        ".jp-OutputArea-output[data-mime-type='MIME']") !== null;
    return done || failed;
}""".replace("MIME", STDERR)
# The sweep explorer: a VBox of [HBox[layout slider, run dropdown], output]; the toy
# explorer and the nucleus calculator have no dropdown.
SWEEP_EXPLORER = ".widget-vbox:has(> .widget-hbox .widget-dropdown):has(.widget-hslider)"
# What the explorer's chart shows now: its canvas's pixels (JupyterLab's Vega renderer
# draws on a canvas), or its SVG when Vega draws SVG.
CHART_STATE = """(root) => {
    const view = root.querySelector(".vega-embed .chart-wrapper");
    const marks = view && view.querySelector(".marks");
    if (!marks) return null;
    return marks.tagName === "CANVAS" ? marks.toDataURL() : marks.outerHTML;
}"""
CHART_CHANGED = """([root, old]) => {
    const state = (STATE)(root);
    return state !== null && state !== old;
}""".replace("STATE", CHART_STATE)
TITLE = re.compile(r'role-title-text"[^>]*>\s*<text[^>]*>(.*?)</text>', re.S)


def chart_titles(page, chart) -> list[str]:
    """The titles of the live Vega view in ``chart`` (a .vega-embed), read from the SVG
    that Vega-Embed's own "Save as SVG" action exports from it."""
    chart.locator("details > summary").click()
    with page.expect_download() as download:
        chart.locator(".vega-actions a", has_text="SVG").click()
    svg = Path(download.value.path()).read_text(encoding="utf-8")
    page.keyboard.press("Escape")
    return [html.unescape(re.sub(r"<[^>]+>", " ", t)).strip() for t in TITLE.findall(svg)]


def test_lab_runs_notebook_06_and_the_layout_slider_redraws_the_chart(
    browser, smoke_results, tmp_path
):
    from playwright.sync_api import expect

    root = lab_folder(tmp_path / "repo", smoke_results)
    env = lab_environment(tmp_path / "home")
    port, token = free_port(), secrets.token_hex(16)
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "lab.log"
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
        f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}", "--allow-root",
    ]  # fmt: skip
    with open(log, "wb") as out:
        lab = subprocess.Popen(
            command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    context = None
    try:
        wait_for_lab(lab, f"{base}/api/status?token={token}", log)
        context = browser.new_context(
            viewport={"width": 1400, "height": 1000}, accept_downloads=True
        )
        page = context.new_page()
        page.set_default_timeout(60_000)
        local = PageLog(page, lambda url: url.startswith((base, f"ws://127.0.0.1:{port}")))
        page.goto(f"{base}/lab/tree/notebooks/{EXPLORER}.ipynb?token={token}")
        n_code = sum(c.cell_type == "code" for c in nbformat.read(
            root / "notebooks" / f"{EXPLORER}.ipynb", as_version=4
        ).cells)  # fmt: skip
        page.locator(".jp-Notebook .jp-CodeCell").nth(n_code - 1).wait_for()
        # The kernel has started (Run All before that runs nothing).
        page.locator(".jp-StatusBar-TextItem", has_text=KERNEL_IDLE).wait_for(timeout=90_000)

        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        page.wait_for_function(RUN_FINISHED, arg=n_code, timeout=150_000)
        errors = page.locator(f".jp-OutputArea-output[data-mime-type='{STDERR}']")
        assert not errors.count(), f"notebook 06 failed in Lab: {errors.all_inner_texts()}"
        page.locator(".jp-StatusBar-TextItem", has_text=KERNEL_IDLE).wait_for()

        explorer = page.locator(SWEEP_EXPLORER)
        assert explorer.count() == 1, "the sweep explorer (slider and run menu) is not shown"
        chart = explorer.locator(".vega-embed").first
        chart.wait_for()
        readout = explorer.locator(".widget-hslider .widget-readout")
        expect(readout).to_have_text("2")  # the notebook's layout parameter
        drawn = explorer.evaluate(CHART_STATE)
        assert drawn is not None, "the explorer's chart is not drawn"
        titles = chart_titles(page, chart)

        handle = explorer.locator(".widget-hslider .noUi-handle")
        handle.focus()
        handle.press("ArrowRight")  # the next layout of the grid
        expect(readout).to_have_text("3")
        page.wait_for_function(CHART_CHANGED, arg=[explorer.element_handle(), drawn])
        moved = chart_titles(page, explorer.locator(".vega-embed").first)
        changed = [(old, new) for old, new in zip(titles, moved, strict=True) if old != new]
        assert changed, f"the chart was redrawn with the same titles: {titles}"
        for old, new in changed:  # the titles that name the chosen layout follow it
            assert "2" in old and "3" in new, (old, new)
        assert not local.errors, f"JupyterLab logged errors: {local.errors}"
        assert not local.outside, f"JupyterLab asked the network for {local.outside}"
    finally:
        if context is not None:
            context.close()
        stop(lab)
