"""A learner's session in a real browser: JupyterLab in headless Chromium runs a notebook and moves a slider.

JupyterLab serves a temporary copy of notebooks/ on 127.0.0.1 (so autosave never writes outputs into the
repository), Debian's chromium is driven by Python playwright, and the test checks that moving an
ipywidgets slider changes what the notebook shows, with no error in the page or the kernel.
Chromium comes from Debian (/usr/bin/chromium): never `playwright install`.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "outputs" / "browser"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage"]

pytestmark = pytest.mark.browser

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium for this test")
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(tmp_path_factory, app: str):
    """Run ``jupyter lab`` or ``jupyter notebook`` (Notebook 7) on 127.0.0.1, serving a copy of notebooks/.

    A generator for the fixtures below: yields the server's details (``open_url(name)`` is the address that
    opens a notebook in this front end), then stops the server. Kernels run in quick mode (LABKIT_QUICK=1).
    """
    root = tmp_path_factory.mktemp(app)
    for nb in (REPO / "notebooks").glob("*.ipynb"):
        shutil.copy(nb, root / nb.name)
    port, token = _free_port(), secrets.token_hex(16)
    # A config folder of its own, with the "Jupyter news?" pop-up switched off: it would sit over the cells.
    config = tmp_path_factory.mktemp("jupyter_config")
    (config / "labconfig").mkdir()
    (config / "labconfig" / "page_config.json").write_text(
        '{"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": true}}')
    env = dict(os.environ, LABKIT_QUICK="1", JUPYTER_PLATFORM_DIRS="1", JUPYTER_CONFIG_DIR=str(config))
    cmd = [sys.executable, "-m", "jupyter", app, "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={token}", "--ServerApp.disable_check_xsrf=True"]
    if app == "lab":
        cmd += ["--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    name = {"lab": "JupyterLab", "notebook": "Notebook 7"}[app]
    log = open(root / "jupyter.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: " + (root / "jupyter.log").read_text()[-2000:]) from None
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError(f"{name} did not start within 90 s")
    url = f"http://127.0.0.1:{port}"
    # JupyterLab: ?reset starts from an empty workspace. Otherwise it reopens the notebooks of earlier tests (or
    # earlier runs) in background tabs, and the first cell on the page can belong to a hidden one. Notebook 7
    # shows one notebook per page, at /notebooks/<name>.
    paths = {"lab": "/lab/tree/{name}?reset&token={token}", "notebook": "/notebooks/{name}?token={token}"}
    yield {"url": url, "token": token, "root": root, "app": app, "name": name,
           "open_url": lambda nb: url + paths[app].format(name=nb, token=token)}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 serving a copy of notebooks/, kernels in quick mode."""
    yield from _serve(tmp_path_factory, "lab")


@pytest.fixture(scope="module")
def notebook7(tmp_path_factory):
    """Classic Notebook 7 (``jupyter notebook``) on 127.0.0.1 serving a copy of notebooks/, kernels in quick mode."""
    yield from _serve(tmp_path_factory, "notebook")


@pytest.fixture(params=["lab", "notebook7"])
def frontend(request):
    """Each front end in turn: JupyterLab, then Notebook 7 (both module-scoped servers)."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


VISIBLE_NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"
#: Page errors of a front end itself, known upstream and harmless to the notebook, that the tests do not count.
#: Notebook 7.6: a race in its keyboard-shortcuts settings plugin while the settings load (jupyter/notebook#7862).
KNOWN_PAGE_ERRORS = {"notebook": ("Cannot read properties of undefined (reading 'schema')",)}


def open_notebook(browser, server, name: str):
    """Open a notebook in the server's front end and wait until its kernel is ready. Returns (page, page_errors).

    Notebook 7's page is JupyterLab's notebook panel, so everything after the address is the same for both.
    """
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    known = KNOWN_PAGE_ERRORS.get(server.get("app"), ())

    def on_error(exc):
        if str(exc) in known:
            print(f"{server.get('name')}: known front-end page error, not counted: {exc}")
        else:
            errors.append(str(exc))

    page.on("pageerror", on_error)
    page.goto(server["open_url"](name), timeout=120_000)
    page.wait_for_selector(f"{VISIBLE_NOTEBOOK} .jp-Cell", timeout=120_000)
    page.wait_for_function(
        "() => { const s = document.querySelector('.jp-Notebook-ExecutionIndicator');"
        " return !s || s.getAttribute('data-status') === 'idle'; }", timeout=120_000)
    time.sleep(1.0)
    return page, errors


def run_all_cells(page, timeout_s: float = 600, label: str = "run_all") -> float:
    """Run > Run All Cells, then wait until no cell shows the busy prompt [*]. Returns seconds taken.

    Fails at once, with the traceback, when a cell raises (JupyterLab and Notebook 7 then leave the later cells
    unrun), and saves a screenshot of the page (``<label>_error.png`` or ``<label>_timeout.png``) when it fails
    or times out. The Run menu is the same in both front ends.
    """
    start = time.time()
    page.locator(f"{VISIBLE_NOTEBOOK} .jp-Cell").first.click()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()
    time.sleep(2.0)
    finished = ("() => { const prompts = [...document.querySelectorAll('.jp-InputArea-prompt')];"
                " return prompts.length > 0 && !prompts.some(p => p.textContent.includes('*'))"
                " && !prompts.some(p => /\\[\\s*\\]/.test(p.textContent) && p.closest('.jp-CodeCell')); }")
    while time.time() - start < timeout_s:
        errors = kernel_errors(page)
        if errors or page.evaluate(finished):
            break
        time.sleep(0.5)
    else:
        _screenshot(page, f"{label}_timeout")
        raise AssertionError(f"Run All Cells did not finish within {timeout_s} s")
    if errors:
        _screenshot(page, f"{label}_error")
        raise AssertionError("a cell raised in the notebook:\n" + "\n".join(errors)[-3000:])
    return time.time() - start


def _screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)


def kernel_errors(page) -> list[str]:
    """Tracebacks shown in any output area of the notebook, scrolled out of view or not.

    textContent, not innerText: JupyterLab 4 (and Notebook 7) skip rendering cells outside the viewport
    (windowingMode "contentVisibility"), and innerText is empty for them, so an error further up a long notebook
    such as 10_drift_lab went unseen and Run All only timed out.
    """
    texts = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'],"
                         " .jp-OutputArea-output.jp-mod-error, .jp-RenderedText[data-mime-type="
                         "'application/vnd.jupyter.error']").evaluate_all("els => els.map(e => e.textContent)")
    return [t for t in texts if "Traceback" in t or re.search(r"\w+Error\b", t)]


def slider_handle(page, description: str):
    """The draggable handle of the ipywidgets slider whose label is ``description``."""
    slider = page.locator(".widget-slider", has=page.locator(".widget-label", has_text=description)).first
    slider.wait_for(timeout=60_000)
    return slider, slider.locator(".noUi-handle").first


def move_slider(page, description: str, steps: int) -> str:
    """Move a slider by ``steps`` keyboard steps (right if positive). Returns its new readout."""
    slider, handle = slider_handle(page, description)
    handle.focus()
    key = "ArrowRight" if steps > 0 else "ArrowLeft"
    for _ in range(abs(steps)):
        page.keyboard.press(key)
    page.keyboard.press("Enter")
    return _slider_readout(page, slider)


def _slider_readout(page, slider) -> str:
    """A slider's readout; the DriftLab's identity_strength slider has none (the front end would clamp a typed
    value silently), and the strength box beside it shows its value instead."""
    readout = slider.locator(".widget-readout")
    if readout.count():
        return readout.first.inner_text()
    return page.locator(".driftlab-strength-box input").first.input_value()


def drag_slider(page, description: str, fraction: float) -> str:
    """Drag a slider's handle with the mouse by ``fraction`` of its track's width. Returns its new readout.

    Notebook 7 needs the mouse: it takes the arrow keys for moving between cells even when a widget has the
    focus (jupyter/notebook#7716), so ``move_slider`` does nothing there.
    """
    slider, handle = slider_handle(page, description)
    handle.scroll_into_view_if_needed()
    track, box = slider.locator(".noUi-base").first.bounding_box(), handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + fraction * track["width"], y, steps=5)
    page.mouse.up()
    return _slider_readout(page, slider)


def wait_for_change(page, selector: str, before: str, timeout_s: float = 60) -> float:
    """Seconds until the inner text of ``selector`` differs from ``before`` (raises on timeout)."""
    start = time.time()
    while time.time() - start < timeout_s:
        now = page.locator(selector).first.inner_text()
        if now != before:
            return time.time() - start
        time.sleep(0.05)
    raise AssertionError(f"{selector} did not change within {timeout_s} s")


def test_welcome_notebook_runs_and_its_slider_changes_the_output(browser, lab):
    page, page_errors = open_notebook(browser, lab, "00_welcome.ipynb")
    seconds = run_all_cells(page, timeout_s=300)
    print(f"00_welcome: Run All Cells finished in {seconds:.1f} s in JupyterLab")
    assert kernel_errors(page) == []

    readout = "#drift-readout"
    page.locator(readout).first.wait_for(timeout=60_000)
    before = page.locator(readout).first.inner_text()
    new_value = move_slider(page, "drift", +5)
    took = wait_for_change(page, readout, before)
    after = page.locator(readout).first.inner_text()
    print(f"slider moved to {new_value}: output updated in {took:.2f} s ({before!r} -> {after!r})")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "00_welcome.png"), full_page=False)
    assert kernel_errors(page) == []
    assert page_errors == [], page_errors
    page.close()


# ------------------------------------------------------------------------------------- the drift lab (issue 6)
DRIFTLAB_NOTEBOOK = "driftlab_browser.ipynb"
DRIFTLAB_CELL = "from labkit.widgets import DriftLab\n\nlab = DriftLab({args})\nlab.show()"


def _driftlab_model(folder: Path) -> str | None:
    """None (the shipped model) when data/ has it; else an untrained model of the same size saved in ``folder``.

    The test checks the app (controls, views, cache, worker, timings), which an untrained model exercises just
    as well, so it does not depend on the shipped checkpoint being there. Timings are the same: same size.
    LABKIT_TEST_MODEL=<folder> picks another IdentityVideoDiT folder (e.g. while the shipped one is replaced).
    """
    if os.environ.get("LABKIT_TEST_MODEL"):
        return os.environ["LABKIT_TEST_MODEL"]
    if (REPO / "data" / "identity_video_dit" / "config.json").is_file():
        return None
    import torch

    from labkit.model import IdentityVideoDiT

    torch.manual_seed(0)
    IdentityVideoDiT(sample_size=32, max_frames=8).save_pretrained(folder)
    return str(folder)


def _driftlab_view(page) -> tuple[str, str]:
    """What the lab shows now: the headline figures' text and the curve image's source."""
    # textContent, not innerText: JupyterLab 4 does not render cells scrolled out of view, and innerText of an
    # unrendered element is empty, which would make "the view changed" true or false for the wrong reason.
    figures = page.locator("#driftlab-figures").first.text_content() or ""
    curve = page.locator("img.driftlab-curve").first.get_attribute("src") or ""
    return figures, curve


def _wait_for_view_change(page, before: tuple[str, str], timeout_s: float = 120) -> float:
    """Seconds until both the figures and the curve differ from ``before`` (raises on timeout)."""
    start = time.time()
    while time.time() - start < timeout_s:
        figures, curve = _driftlab_view(page)
        if figures != before[0] and curve != before[1]:
            return time.time() - start
        time.sleep(0.02)
    raise AssertionError(f"the drift lab did not update within {timeout_s} s; it shows {before[0]!r}")


def _write_driftlab_notebook(server) -> str | None:
    """Write the one-cell DriftLab notebook (DRIFTLAB_CELL) into the server's folder. Returns the model path used."""
    import nbformat

    model_path = _driftlab_model(server["root"] / "untrained_model")
    print("DriftLab model:", model_path or "the shipped data/identity_video_dit",
          "(not the shipped model)" if model_path else "")
    nb = nbformat.v4.new_notebook()
    args = f"model_path={model_path!r}" if model_path else ""
    nb.cells = [nbformat.v4.new_code_cell(DRIFTLAB_CELL.format(args=args))]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, server["root"] / DRIFTLAB_NOTEBOOK)
    return model_path


def _wait_for_first_result(page) -> str:
    """Wait for the lab's first result, or fail at once with the message saying why there is none."""
    first = page.wait_for_function(
        "() => { const f = document.querySelector('#driftlab-source');"
        " if (f && f.textContent.includes(' in ')) return 'shown';"
        " const s = document.querySelector('#driftlab-status');"
        " return s && s.textContent.includes('failed') ? 'failed' : false; }", timeout=180_000).json_value()
    assert first == "shown", page.locator("#driftlab-message").first.text_content()
    return page.locator("#driftlab-source").first.text_content()  # innerText is empty while it is out of view


def _driftlab_step(page, name: str, action, timings: list) -> None:
    """Do ``action`` and wait until the lab's figures and curve both change; no error may show in the kernel."""
    before = _driftlab_view(page)
    action()
    took = _wait_for_view_change(page, before)
    source = page.locator("#driftlab-source").first.inner_text()
    timings.append((name, took, source))
    print(f"  {name:<44} view updated in {took:5.2f} s   ({source})")
    assert kernel_errors(page) == []


def _choose_strategy(page, label: str) -> None:
    page.locator(".widget-dropdown", has=page.locator(".widget-label", has_text="strategy")).first.locator(
        "select").select_option(label=label)


def _type_strength(page, value: str) -> None:
    """Type a value into the DriftLab's strength box, beside its identity_strength slider, and press Enter."""
    box = page.locator(".driftlab-strength-box input").first
    box.fill(value)
    box.press("Enter")


def _type_into(page, description: str, value: str) -> None:
    box = page.locator(".widget-text", has=page.locator(".widget-label", has_text=description)).first
    box.locator("input").fill(value)
    box.locator("input").press("Enter")


def test_driftlab_updates_its_curve_and_figures_when_slider_and_strategy_change(browser, lab):
    """The DriftLab in JupyterLab: a moved slider, a new strategy, a new and a cached setting all update the
    curve and the figures with no error in the page or the kernel; bad input shows a message instead."""
    model_path = _write_driftlab_notebook(lab)
    page, page_errors = open_notebook(browser, lab, DRIFTLAB_NOTEBOOK)
    seconds = run_all_cells(page, timeout_s=300)
    print(f"DriftLab: cell ran in {seconds:.1f} s; first result {_wait_for_first_result(page)}")
    timings = []

    def step(name, action):
        _driftlab_step(page, name, action, timings)

    step("identity_strength slider +2 steps", lambda: move_slider(page, "identity_strength", +2))
    step("strategy -> keyframe", lambda: _choose_strategy(page, "keyframe (Veo 3)"))
    step("seed 0 -> 1 (a new setting)", lambda: _type_into(page, "seed", "1"))
    step("identity_strength slider -1 step (new)", lambda: move_slider(page, "identity_strength", -1))
    step("identity_strength slider +1 step (cached)", lambda: move_slider(page, "identity_strength", +1))
    step("seed 1 -> 0 (seen before: cached)", lambda: _type_into(page, "seed", "0"))

    # The identity tokens must be visible in the lab: strength 0 against 1 with the explicit strategy.
    _choose_strategy(page, "explicit (Gen-4.5)")
    means = {}
    for strength in ("0", "1"):
        before = _driftlab_view(page)
        _type_strength(page, strength)
        _wait_for_view_change(page, before)
        page.wait_for_function("(s) => document.querySelector('#driftlab-setting')?.textContent"
                               ".includes('strength ' + s + ' ')", arg=strength, timeout=120_000)
        means[strength] = float(page.locator("#driftlab-mean").first.inner_text())
        assert kernel_errors(page) == []
    print(f"  explicit: mean identity score {means['0']:.3f} at strength 0, {means['1']:.3f} at strength 1")
    if model_path is None:  # the shipped, trained model: its tokens must change what the lab shows
        assert abs(means["1"] - means["0"]) > 0.05, means

    _type_into(page, "references", "0")
    page.wait_for_function("() => document.querySelector('#driftlab-message')"
                           "?.textContent.includes('must be 1..5')", timeout=30_000)
    print("  references typed as 0: message", page.locator("#driftlab-message").first.inner_text())
    _type_into(page, "references", "3")
    _type_strength(page, "5")  # out of range: refused in words, never clamped to 1.5 without a word
    page.wait_for_function("() => document.querySelector('#driftlab-message')"
                           "?.textContent.includes('identity_strength must be 0..1.5, got 5')", timeout=30_000)
    print("  strength typed as 5: message", page.locator("#driftlab-message").first.inner_text())

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator(".driftlab").first.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "driftlab.png"), full_page=False)
    cached = [t for n, t, s in timings if s.startswith(("cache", "precomputed"))]
    new = [t for n, t, s in timings if s.startswith("computed")]
    print(f"DriftLab: cached/precomputed settings {[round(t, 2) for t in cached]} s (target < 1 s); "
          f"new settings {[round(t, 2) for t in new]} s (target < 10 s)")
    assert kernel_errors(page) == []
    assert page_errors == [], page_errors
    page.close()


# ------------------------------------------------------------------- Notebook 7 as well as JupyterLab (issue 7)
def _slider_and_strategy_update_the_lab(page, server, screenshot: str) -> None:
    """The check both front ends share: the lab's first result shows; the identity_strength slider and the
    strategy each update its curve and figures (the slider moved with the mouse, as in Notebook 7 the arrow keys
    are not the slider's); no error in the kernel or the page; a screenshot is saved."""
    print(f"{server['name']}: first result {_wait_for_first_result(page)}")
    page.locator(".driftlab").first.scroll_into_view_if_needed()  # after Run All the page sits at the bottom
    timings: list = []
    _driftlab_step(page, "identity_strength slider dragged right", lambda: drag_slider(page, "identity_strength", 0.15),
                   timings)
    _driftlab_step(page, "strategy -> keyframe", lambda: _choose_strategy(page, "keyframe (Veo 3)"), timings)
    page.locator(".driftlab").first.scroll_into_view_if_needed()
    _screenshot(page, screenshot)
    assert kernel_errors(page) == []


def test_driftlab_in_notebook7_updates_when_slider_and_strategy_change(browser, notebook7):
    """The DriftLab cell of the JupyterLab test above, in classic Notebook 7 (/notebooks/<name>)."""
    _write_driftlab_notebook(notebook7)
    page, page_errors = open_notebook(browser, notebook7, DRIFTLAB_NOTEBOOK)
    seconds = run_all_cells(page, timeout_s=300, label="driftlab_notebook7")
    print(f"DriftLab in Notebook 7: cell ran in {seconds:.1f} s")
    _slider_and_strategy_update_the_lab(page, notebook7, "driftlab_notebook7")
    assert page_errors == [], page_errors
    page.close()


def test_notebook_10_runs_and_its_driftlab_responds(browser, frontend):
    """Notebook 10 as a learner meets it, in JupyterLab and in Notebook 7: Run All Cells (quick mode) with no
    error, then the DriftLab at its top follows the identity_strength slider and the strategy. It uses the
    shipped model in data/, so it fails while that model does not load."""
    page, page_errors = open_notebook(browser, frontend, "10_drift_lab.ipynb")
    label = f"10_drift_lab_{frontend['app']}"
    seconds = run_all_cells(page, timeout_s=900, label=label)
    print(f"10_drift_lab: Run All Cells finished in {seconds:.1f} s in {frontend['name']}")
    _slider_and_strategy_update_the_lab(page, frontend, label)
    assert page_errors == [], page_errors
    page.close()


def test_a_cell_that_raises_fails_the_browser_run(browser, frontend):
    """run_all_cells must not swallow errors, in either front end: a raising cell fails the run at once."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in ("x = 1", "raise RuntimeError('boom from a cell')",
                                                           "y = 2")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, frontend["root"] / "raises.ipynb")
    page, _ = open_notebook(browser, frontend, "raises.ipynb")
    with pytest.raises(AssertionError, match="boom from a cell"):
        run_all_cells(page, timeout_s=120, label=f"deliberate_raise_{frontend['app']}")
    page.close()
