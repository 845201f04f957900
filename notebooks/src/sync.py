"""Write every course notebook from its source: notebooks/src/NN_name.py -> notebooks/NN_name.ipynb (no outputs).

Each notebook has one source, a jupytext percent-format twin named after it (``# %%`` starts a code cell,
``# %% [markdown]`` a markdown cell). Edit the source, then write the notebooks::

    make notebooks-sync                                   # = .venv/bin/python notebooks/src/sync.py
    .venv/bin/python notebooks/src/sync.py 03_face_embeddings   # only this one
    .venv/bin/python notebooks/src/sync.py --check        # exit 1 and name the notebooks that differ

tests/test_notebook_sources.py fails while a notebook and its source disagree. Two things jupytext alone does not
do are done here, and nowhere else:

* cell ids are ``nbNN-ii`` (notebook number, cell index), so writing an unchanged source changes nothing;
* the set-up cell is marked ``active="ipynb"`` in the source: its ``%pip`` line sits inside an ``if``, which no
  Python parser accepts, so jupytext keeps the cell commented out in the source (ruff lints every other cell)
  and un-comments it in the notebook; the marker itself does not go into the notebook.

A notebook edited in JupyterLab goes back into its source with ``--from-notebook NN_name`` (the notebook's ids are
rewritten by the next sync). JupyterLab can also open a source as a notebook: right-click it, Open With, Jupytext
Notebook.
"""

import argparse
import re
import sys
from pathlib import Path

import jupytext
import nbformat

SOURCES = Path(__file__).resolve().parent
NOTEBOOKS = SOURCES.parent
FORMAT = "py:percent"
# A line magic inside a block (the set-up cell's `    %pip install ...`): Python cannot parse it commented out.
_INDENTED_MAGIC = re.compile(r"^[ \t]+[%!]", re.M)
# The source's YAML header keeps the notebook's kernelspec and language_info, not jupytext's version.
_HEADER_FILTER = {"notebook_metadata_filter": "kernelspec,language_info,-jupytext"}


def source_paths() -> list[Path]:
    return sorted(SOURCES.glob("[0-9][0-9]_*.py"))


def notebook_path(source: Path) -> Path:
    return NOTEBOOKS / f"{source.stem}.ipynb"


def source_path(notebook: Path) -> Path:
    return SOURCES / f"{notebook.stem}.py"


def cell_id(stem: str, index: int) -> str:
    return f"nb{stem[:2]}-{index:02d}"


def notebook_from_text(text: str, stem: str) -> nbformat.NotebookNode:
    """The notebook that a source's text gives: no outputs, ids ``nbNN-ii``, no jupytext metadata."""
    nb = jupytext.reads(text, fmt=FORMAT)
    nb.metadata.pop("jupytext", None)
    for i, cell in enumerate(nb.cells):
        if cell.metadata.get("active") == "ipynb":
            del cell.metadata["active"]
        cell.id = cell_id(stem, i)
    nbformat.validate(nb)
    return nb


def notebook_from_source(source: Path) -> nbformat.NotebookNode:
    return notebook_from_text(source.read_text(encoding="utf-8"), source.stem)


def source_from_notebook(nb: nbformat.NotebookNode) -> str:
    """A notebook's source text (the inverse of notebook_from_text, ids aside)."""
    nb = nbformat.from_dict(nb)
    nb.metadata["jupytext"] = dict(_HEADER_FILTER)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            if _INDENTED_MAGIC.search(cell.source):
                cell.metadata["active"] = "ipynb"
    return jupytext.writes(nb, fmt=FORMAT)


def _resolve(names: list[str], pick) -> list[Path]:
    if not names:
        return source_paths()
    found = []
    for name in names:
        stem = Path(name).stem
        matches = [p for p in source_paths() if p.stem == stem or p.stem.startswith(f"{stem}_")]
        if len(matches) != 1:
            sys.exit(f"no single notebook source matches {name!r}")
        found.append(pick(matches[0]))
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebooks to write (01, 01_drift, ...); all when none")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a notebook differs")
    parser.add_argument("--from-notebook", action="store_true",
                        help="the other way: write the sources from the notebooks (after editing in JupyterLab)")
    args = parser.parse_args(argv)
    sources = _resolve(args.names, lambda p: p)
    if args.from_notebook:
        for source in sources:
            source.write_text(source_from_notebook(nbformat.read(notebook_path(source), as_version=4)),
                              encoding="utf-8")
            print("wrote", source.relative_to(NOTEBOOKS.parent))
        return 0
    stale = []
    for source in sources:
        nb, path = notebook_from_source(source), notebook_path(source)
        text = nbformat.writes(nb) + "\n"
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text, encoding="utf-8")
            print("wrote", path.relative_to(NOTEBOOKS.parent))
    if args.check and stale:
        print("out of sync with notebooks/src (run make notebooks-sync):", *[p.name for p in stale], sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
