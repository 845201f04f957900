"""What every notebook generator in notebooks/src shares: the two standard first cells and the writer.

The generators run as scripts (``.venv/bin/python notebooks/src/make_....py``), so this folder is on their
import path. The setup cell takes the repository URL from ``labkit.common.REPO_URL``: it is written once.
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from labkit.common import REPO_URL

NOTEBOOKS = Path(__file__).resolve().parent.parent

SETUP = f'''# Setup: on Colab this installs labkit from its repository; anywhere else it does nothing.
# Quick mode (less work: for a slow machine, or Binder's 2 GB): uncomment the next line before running any cell
# (or restart the kernel after). Anywhere: Colab, Binder, JupyterLab.
# %env LABKIT_QUICK=1
import sys

if "google.colab" in sys.modules:
    %pip install -q "labkit @ git+{REPO_URL}"'''

DEVICE = '''from labkit.common import QUICK, get_device, seed_everything, use_one_cpu_thread

device = get_device()
seed_everything(0)
use_one_cpu_thread(device)  # steadier on a shared CPU; help(use_one_cpu_thread) says why
print(device, "quick mode" if QUICK else "normal mode")'''


def md(text):
    return ("md", text)


def code(text):
    return ("code", text)


def write_notebook(cells, name: str, id_prefix: str = "cell", id_width: int = 2) -> Path:
    """Write ``cells`` ((kind, source) pairs, kind "md" or "code") to notebooks/``name``.ipynb, no outputs.

    Cell ids are stable (``id_prefix``-index), so regenerating an unchanged notebook changes nothing.
    """
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    make = {"md": new_markdown_cell, "code": new_code_cell}
    nb.cells = [make[kind](source.strip("\n")) for kind, source in cells]
    for i, cell in enumerate(nb.cells):
        cell.id = f"{id_prefix}-{i:0{id_width}d}"
    nbformat.validate(nb)
    path = NOTEBOOKS / (name if name.endswith(".ipynb") else f"{name}.ipynb")
    nbformat.write(nb, path)
    print("wrote", path)
    return path
