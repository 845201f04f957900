"""Every notebook has one source, notebooks/src/<name>.py (jupytext percent format), and says what it says.

The committed notebooks/<name>.ipynb must be exactly what notebooks/src/sync.py writes from its source: the same
cells (type, source, id, metadata), no outputs, the same notebook metadata, byte for byte the same file. Edit the
source and run ``make notebooks-sync``; these tests fail until then.
"""

import copy
import difflib
import importlib.util
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from labkit.run_notebooks import notebook_paths

SYNC_PATH = Path(__file__).resolve().parent.parent / "notebooks" / "src" / "sync.py"
_spec = importlib.util.spec_from_file_location("notebooks_src_sync", SYNC_PATH)
sync = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sync)

NOTEBOOKS = notebook_paths()
IDS = [p.stem for p in NOTEBOOKS]


def differences(expected, committed) -> list[str]:
    """How the committed notebook differs from the one its source gives (empty when they agree)."""
    found = []
    if committed.metadata != expected.metadata:
        found.append(f"notebook metadata {dict(committed.metadata)} != {dict(expected.metadata)}")
    if len(committed.cells) != len(expected.cells):
        found.append(f"{len(committed.cells)} cells, the source has {len(expected.cells)}")
    for i, (got, want) in enumerate(zip(committed.cells, expected.cells)):
        for key in ("cell_type", "id", "source", "metadata"):
            if got.get(key) == want.get(key):
                continue
            if key == "source":  # the lines that differ, not the whole cell
                diff = difflib.unified_diff(want.source.splitlines(), got.source.splitlines(), "source", "notebook",
                                            lineterm="", n=1)
                found.append(f"cell {i} ({want.get('id')}): source differs:\n" + "\n".join(list(diff)[2:]))
            else:
                found.append(f"cell {i} ({want.get('id')}): {key} {got.get(key)!r}, the source says {want.get(key)!r}")
        if got.cell_type == "code" and (got.get("outputs") or got.get("execution_count") is not None):
            found.append(f"cell {i} carries outputs")
    return found


def test_every_notebook_has_one_source_and_every_source_a_notebook():
    assert [p.stem for p in sync.source_paths()] == IDS
    assert len(IDS) == 11
    for path in NOTEBOOKS:
        assert sync.source_path(path).is_file()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_what_its_source_says(path):
    expected = sync.notebook_from_source(sync.source_path(path))
    committed = nbformat.read(path, as_version=4)
    problems = differences(expected, committed)
    assert not problems, f"{path.name} and notebooks/src/{path.stem}.py disagree (run make notebooks-sync):\n" + \
        "\n".join(problems)
    assert path.read_text(encoding="utf-8") == nbformat.writes(expected) + "\n", \
        f"{path.name}: same cells, but not the file make notebooks-sync writes (run it)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_cell_ids_are_stable_notebook_number_and_index(path):
    nb = nbformat.read(path, as_version=4)
    assert [c.id for c in nb.cells] == [f"nb{path.name[:2]}-{i:02d}" for i in range(len(nb.cells))]
    again = sync.notebook_from_source(sync.source_path(path))
    assert [c.id for c in again.cells] == [c.id for c in nb.cells], "converting twice gives the same ids"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_only_the_setup_cell_is_notebook_only_and_the_notebook_goes_back_into_its_source(path):
    text = sync.source_path(path).read_text(encoding="utf-8")
    assert text.count('# %% active="ipynb"') == 1, "the set-up cell (its %pip sits inside an if) and no other"
    assert "jupytext_version" not in text, "the source's header does not depend on the jupytext version"
    committed = nbformat.read(path, as_version=4)
    back = sync.notebook_from_text(sync.source_from_notebook(committed), path.stem)
    assert not differences(back, committed)


def _mismatches(nb):
    """Copies of ``nb`` each changed in one way a stale or hand-edited notebook would be."""
    code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "check(" in c.source)
    edits = {
        "a source line": lambda n: n.cells[code].update(source=n.cells[code].source.replace("check(", "check (", 1)),
        "one character of markdown": lambda n: n.cells[0].update(source=n.cells[0].source + "."),
        "a cell id": lambda n: n.cells[3].update(id="cell-03"),
        "a cell type": lambda n: n.cells.__setitem__(1, nbformat.v4.new_markdown_cell(n.cells[1].source,
                                                                                       id=n.cells[1].id)),
        "a cell dropped": lambda n: n.cells.pop(),
        "a cell added": lambda n: n.cells.append(nbformat.v4.new_code_cell("1 + 1", id="nbxx-99")),
        "cell metadata": lambda n: n.cells[2].metadata.update(tags=["solution"]),
        "notebook metadata": lambda n: n.metadata.pop("language_info"),
        "an output": lambda n: n.cells[code].update(execution_count=1),
    }
    for what, edit in edits.items():
        changed = copy.deepcopy(nb)
        edit(changed)
        yield what, changed


def test_a_notebook_that_differs_from_its_source_is_caught():
    path = next(p for p in NOTEBOOKS if p.name.startswith("07_"))
    expected = sync.notebook_from_source(sync.source_path(path))
    committed = nbformat.read(path, as_version=4)
    assert not differences(expected, committed)
    for what, changed in _mismatches(committed):
        assert differences(expected, changed), f"{what} went unnoticed"


def test_sync_check_fails_on_a_stale_notebook_and_sync_writes_it(tmp_path, monkeypatch, capsys):
    (tmp_path / "src").mkdir()
    source = shutil.copy(sync.source_path(NOTEBOOKS[0]), tmp_path / "src")
    shutil.copy(NOTEBOOKS[0], tmp_path)
    monkeypatch.setattr(sync, "SOURCES", tmp_path / "src")
    monkeypatch.setattr(sync, "NOTEBOOKS", tmp_path)
    notebook = tmp_path / NOTEBOOKS[0].name
    assert sync.main(["--check"]) == 0
    Path(source).write_text(Path(source).read_text(encoding="utf-8") + "\n# %%\nprint('new cell')\n",
                            encoding="utf-8")
    before = notebook.read_text(encoding="utf-8")
    assert sync.main(["--check"]) == 1
    assert NOTEBOOKS[0].name in capsys.readouterr().out
    assert notebook.read_text(encoding="utf-8") == before, "--check writes nothing"
    assert sync.main([NOTEBOOKS[0].stem[:2]]) == 0
    cells = nbformat.read(notebook, as_version=4).cells
    assert cells[-1].source == "print('new cell')" and re.fullmatch(r"nb\d\d-\d\d", cells[-1].id)
    assert sync.main(["--check"]) == 0
