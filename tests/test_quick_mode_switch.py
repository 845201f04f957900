"""Quick mode can be switched on from inside a notebook, as the README says for Colab and Binder: the set-up cell
of every notebook carries a commented ``%env LABKIT_QUICK=1``; uncommented, the notebook's next cell runs in
quick mode."""

import json
import os
import subprocess
import sys

import nbformat

from labkit.run_notebooks import notebook_paths

DRIVER = r"""
import json, sys
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
for source in json.loads(sys.argv[1]):
    result = shell.run_cell(source)
    if not result.success:
        sys.exit(f"cell raised: {result.error_before_exec or result.error_in_exec!r}")
print("QUICK =", shell.user_ns["QUICK"])
"""


def _first_code_cells(path, n=2):
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"][:n]


def test_every_setup_cell_offers_the_quick_mode_switch():
    for path in notebook_paths():
        setup = _first_code_cells(path, 1)[0]
        assert "# %env LABKIT_QUICK=1" in setup.splitlines(), f"{path.name}: no quick-mode line in the set-up cell"


def test_uncommenting_the_switch_turns_quick_mode_on():
    setup, device = _first_code_cells(notebook_paths()[1])
    cells = [setup.replace("# %env LABKIT_QUICK=1", "%env LABKIT_QUICK=1"),
             device.replace("device = get_device()", "device = 'cpu'")]
    env = {k: v for k, v in os.environ.items() if k != "LABKIT_QUICK"}
    for source, expect in ((cells, "QUICK = True"), ([setup, cells[1]], "QUICK = False")):
        out = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(source)], env=env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        assert expect in out.stdout, out.stdout[-2000:]
