"""The notebooks' exercises: the committed copy is the learner's (stubs, nothing solved), the solved copy is made
from it with labkit.solutions, and both run top to bottom in CI.

The learner's copy runs in tests/test_notebooks.py (every notebook), which checks with
``assert_learner_run`` that each exercise says "not attempted yet" and nothing fails. Here the solved copy of
every notebook with exercises is written to a temporary folder and run: every check must pass.
"""

import inspect
import re

import nbformat
import pytest

from labkit import solutions
from labkit.exercises import _REGISTRY, list_exercises
from labkit.run_notebooks import notebook_paths, run_notebook

WITH_EXERCISES = [p for p in notebook_paths() if list_exercises(p.name[:2])]
IDS = [p.stem for p in WITH_EXERCISES]
CHECK = re.compile(r'check\("(\w+)", my_\1\)')


def exercise_outputs(nb) -> dict:
    """{exercise name: the text its check cell printed} of an executed notebook; and no cell shows a result."""
    found = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        names = CHECK.findall(cell.source)
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "execute_result" or not names, \
                f"the check cell of {names} shows a result under it: {out.get('data', {}).get('text/plain')!r}"
        text = "".join(out.get("text", "") for out in cell.get("outputs", []) if out.get("output_type") == "stream")
        for name in names:
            found[name] = text
    return found


def assert_learner_run(nb, notebook: str):
    """Every exercise of the executed learner's copy is "not attempted yet"; no FAIL line anywhere."""
    outputs = exercise_outputs(nb)
    assert sorted(outputs) == sorted(list_exercises(notebook[:2])), (notebook, sorted(outputs))
    for name, text in outputs.items():
        assert f"{name}: not attempted yet" in text and "FAIL" not in text, (notebook, name, text)


def assert_solved_run(nb, notebook: str):
    """Every check of the executed solved copy passes."""
    outputs = exercise_outputs(nb)
    assert sorted(outputs) == sorted(list_exercises(notebook[:2])), (notebook, sorted(outputs))
    for name, text in outputs.items():
        assert "FAIL" not in text and "not attempted" not in text and f"{name}: all " in text, (notebook, name, text)


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=IDS)
def test_the_committed_notebook_is_the_learners_copy_with_a_stub_per_exercise(path):
    nb = nbformat.read(path, as_version=4)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for name in list_exercises(path.name[:2]):
        stub = re.search(rf"def my_{name}\(.*?\):\n    # TODO \(exercise\): .*\n    raise NotImplementedError\(",
                         source)
        assert stub, f"{path.name}: exercise {name} should be a stub that raises NotImplementedError"
        assert f'my_{name} = check("{name}", my_{name}).function' in source, \
            f"{path.name}: the check of {name} should say what the notebook uses next"
    solved, names = solutions.solved_notebook(nb)
    assert sorted(names) == sorted(list_exercises(path.name[:2])), "every stub has a worked solution"
    assert "NotImplementedError" not in "\n".join(c.source for c in solved.cells if c.cell_type == "code")
    for name in names:  # the learner's copy holds none of the solution's lines
        lines = inspect.getsource(getattr(solutions, f"my_{name}")).splitlines()[1:]
        body = [line.split("#")[0].rstrip() for line in lines]
        assert not all(line in source for line in body if line), f"{path.name} holds the solution of {name}"


def test_every_registered_exercise_lives_in_one_notebook():
    assert sorted(n for p in WITH_EXERCISES for n in list_exercises(p.name[:2])) == sorted(_REGISTRY)
    assert len(WITH_EXERCISES) == 10


@pytest.mark.notebook
@pytest.mark.parametrize("path", WITH_EXERCISES, ids=IDS)
def test_the_solved_copy_runs_with_every_check_passing(path, tmp_path):
    solved, _ = solutions.solved_notebook(nbformat.read(path, as_version=4))
    copy = tmp_path / path.name
    nbformat.write(solved, copy)
    executed = tmp_path / "executed.ipynb"
    result = run_notebook(copy, quick=True, timeout=900, save_to=executed)
    print(f"solved {result['notebook']}: {result['seconds']} s, peak {result['peak_memory_mb']} MB")
    assert_solved_run(nbformat.read(executed, as_version=4), path.name)
