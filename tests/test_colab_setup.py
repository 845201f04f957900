"""The Colab path: every notebook's set-up cell, run as on Colab, installs labkit, and the first cells then work.

What this covers, for each notebook: its first code cell (the set-up cell) runs in IPython with Colab detection
forced on (a stand-in ``google.colab`` module in ``sys.modules``), in a fresh virtual environment that has no
labkit in it. The cell's ``%pip install "labkit @ git+REPO_URL"`` is pointed at a copy of this checkout instead
of the repository URL (the files git would commit: tracked and untracked-but-not-ignored ones). Then
``import labkit`` must load the copy pip installed (not this checkout), every file in data/ that the kit reads
must have been installed as package data (``labkit.data``), and the notebook's next code cell (device, seed,
quick mode) must run.

What it does not cover: downloading. Creating an environment with torch would take far too long, so the fresh
environment sees .venv's site-packages (torch, diffusers, IPython, pip, ... but not labkit); pip finds every
dependency already installed, runs with no index (PIP_NO_INDEX) and builds labkit without build isolation.
So a dependency missing from pyproject.toml but installed in .venv goes unnoticed, the git clone itself (a local
folder, not git+https) is not tried, and neither are Colab's own preinstalled versions.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest

from labkit.common import REPO_URL
from labkit.run_notebooks import notebook_paths

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = notebook_paths()
#: How many code cells of each notebook run: the set-up cell and the one after it (device, seed, quick mode).
FIRST_CELLS = 2
#: Files in data/ that only document (a training's learning curve, READMEs): the kit never reads them, so the
#: install may leave them out. Everything else there (weights, configs, sweeps) must be installed.
DOCUMENTATION = {".md", ".png", ".jpg", ".jpeg", ".gif", ".svg"}

pytestmark = pytest.mark.colab

# Runs with the fresh environment's python: the cells in IPython as Colab would (fake google.colab), then reports
# where labkit and its data came from.
DRIVER = r"""
import json, sys, types
from pathlib import Path

sys.modules["google"] = types.ModuleType("google")
sys.modules["google.colab"] = types.ModuleType("google.colab")
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
for i, source in enumerate(json.loads(Path(sys.argv[1]).read_text())):
    result = shell.run_cell(source)
    if not result.success:
        sys.exit(f"code cell {i} raised: {result.error_before_exec or result.error_in_exec!r}")
    if i == 0 and shell.user_ns.get("_exit_code") != 0:
        sys.exit(f"the set-up cell's %pip did not succeed (exit code {shell.user_ns.get('_exit_code')})")
import labkit
from labkit.common import data_path

data = data_path()
print("REPORT", json.dumps({"labkit": labkit.__file__, "data": str(data),
                            "data_files": sorted(str(p.relative_to(data)) for p in data.rglob("*")
                                                 if p.is_file() and "__pycache__" not in p.parts)}))
"""


def _checkout_copy(dest: Path) -> Path:
    """Copy what git would see of this checkout (tracked and untracked-but-not-ignored files) into ``dest``."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                 capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"needs a git checkout to know which files a clone would hold: {err}")
    for name in filter(None, listing.decode().split("\0")):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the working tree is left out
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def _site_packages_without_labkit(dest: Path) -> Path:
    """A folder of links to everything in this interpreter's site-packages except labkit itself."""
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if entry.name.startswith(("labkit", "__editable__")) or entry.suffix == ".pth" or entry.name == "__pycache__":
            continue
        (dest / entry.name).symlink_to(entry)
    return dest


@pytest.fixture(scope="module")
def colab_parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("colab")
    (root / "checkout").mkdir()
    (root / "shared").mkdir()
    return {"checkout": _checkout_copy(root / "checkout"), "shared": _site_packages_without_labkit(root / "shared")}


def _fresh_venv(path: Path, shared: Path) -> Path:
    """A new virtual environment without pip or labkit that sees ``shared`` (pip, torch, ...). Returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "labkit_test_shared.pth").write_text(f"{shared}\n")
    return python


def test_every_notebook_has_a_colab_setup_cell_to_test():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_colab_setup_cell_installs_labkit_and_the_first_cells_run(path, colab_parts, tmp_path):
    cells = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"][:FIRST_CELLS]
    setup = cells[0]
    assert "google.colab" in setup and f"git+{REPO_URL}" in setup, f"{path.name}: unexpected set-up cell:\n{setup}"
    cells[0] = setup.replace(f"git+{REPO_URL}", colab_parts["checkout"].as_uri())
    (tmp_path / "cells.json").write_text(json.dumps(cells))
    (tmp_path / "driver.py").write_text(DRIVER)
    python = _fresh_venv(tmp_path / "venv", colab_parts["shared"])

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    # pip reads its "no-" options from the environment inverted: PIP_NO_BUILD_ISOLATION=0 turns isolation off.
    env.update(PIP_NO_INDEX="1", PIP_NO_BUILD_ISOLATION="0", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1",
               LABKIT_QUICK="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    run = subprocess.run([str(python), "driver.py", "cells.json"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"{path.name}: the Colab set-up failed:\n{output[-4000:]}"
    report = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("REPORT "))[7:])

    venv = (tmp_path / "venv").resolve()
    assert Path(report["labkit"]).resolve().is_relative_to(venv), f"labkit came from {report['labkit']}"
    assert Path(report["data"]).resolve().is_relative_to(venv), f"labkit's data came from {report['data']}"
    shipped = sorted(str(p.relative_to(colab_parts["checkout"] / "data"))
                     for p in (colab_parts["checkout"] / "data").rglob("*")
                     if p.is_file() and p.suffix.lower() not in DOCUMENTATION)
    missing = sorted(set(shipped) - set(report["data_files"]))
    assert not missing, f"files in data/ that the install leaves out (pyproject.toml package-data): {missing}"
    print(f"{path.name}: set-up cell installed labkit into a fresh venv; first {FIRST_CELLS} code cells ran")
