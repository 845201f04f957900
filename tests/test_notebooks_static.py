"""Course notebooks are committed clean and share one shape: setup cell, goals first, a question last."""

import re

import nbformat
import pytest

from labkit.common import REPO_URL
from labkit.run_notebooks import notebook_paths

NOTEBOOKS = notebook_paths()
IDS = [p.stem for p in NOTEBOOKS]


def _load(path):
    return nbformat.read(path, as_version=4)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_committed_without_outputs(path):
    for cell in _load(path).cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name} carries outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_opens_with_goals_and_colab_setup(path):
    cells = _load(path).cells
    assert cells[0].cell_type == "markdown"
    assert re.search(r"you will be able to|you will", cells[0].source, re.I), "first cell states the goals"
    setup = next(c for c in cells if c.cell_type == "code")
    assert "google.colab" in setup.source
    urls = re.findall(r"git\+(https://\S+?)[\"']", setup.source)
    assert urls == [REPO_URL], f"setup cell must install from labkit.common.REPO_URL, found {urls}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_ends_with_a_measured_result_and_a_question(path):
    cells = _load(path).cells
    last_md = " ".join([c for c in cells if c.cell_type == "markdown"][-1].source.split())
    questions = [q for q in re.findall(r"[^.?!]+\?", last_md) if len(q.split()) >= 6]
    assert questions, f"{path.name}: its last text cell should ask the learner a question (a sentence of 6+ words)"
    # One of the last code cells prints a measured figure (a formatted number) or a report of them.
    last_code = [c.source for c in cells if c.cell_type == "code"][-4:]
    assert any(re.search(r"\{[^{}]*:[+]?\.?\d*[fge%]\}|describe_effect|report\(", s) for s in last_code), \
        f"{path.name}: none of its last code cells prints a measured result"


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if not p.name.startswith("00_")],
                         ids=[i for i in IDS if not i.startswith("00_")])
def test_notebook_has_an_exercise_with_a_checker(path):
    sources = "\n".join(c.source for c in _load(path).cells if c.cell_type == "code")
    assert "check(" in sources, f"{path.name} has no exercise checked with labkit.exercises.check"


def test_readme_uses_the_same_repository_url():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for url in re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", readme):
        assert url == REPO_URL, f"README names {url}, labkit.common.REPO_URL is {REPO_URL}"
