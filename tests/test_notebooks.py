"""Every course notebook runs top to bottom, headless, in quick mode; a notebook that raises fails the run."""

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError
from test_exercises_notebooks import assert_learner_run

from labkit.run_notebooks import notebook_paths, run_notebook

NOTEBOOKS = notebook_paths()


def test_there_are_notebooks_to_run():
    assert any(p.name.startswith("00_welcome") for p in NOTEBOOKS)


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_quick_mode(path, tmp_path):
    """The committed notebook is the learner's copy: it runs with every exercise unsolved ("not attempted yet")."""
    executed = tmp_path / path.name
    result = run_notebook(path, quick=True, timeout=900, save_to=executed)
    print(f"{result['notebook']}: {result['seconds']} s, peak {result['peak_memory_mb']} MB")
    if not path.name.startswith("00_"):
        assert_learner_run(nbformat.read(executed, as_version=4), path.name)


@pytest.mark.notebook
def test_a_notebook_that_raises_fails_the_run(tmp_path):
    """The harness must not swallow errors: a cell that raises makes run_notebook raise."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("raise RuntimeError('boom')")]
    path = tmp_path / "99_broken.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(CellExecutionError, match="boom"):
        run_notebook(path, quick=True, timeout=120)
