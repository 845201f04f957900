"""``python -m labkit.exercises``: lists every exercise by notebook, checks a learner's solutions file, and says in
one line (exit status 2) what is wrong with a file it cannot check."""

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from labkit.exercise_cli import SolutionsError, main
from labkit.exercises import list_exercises, run_solutions

SOLUTIONS = '''
import torch

def my_region_routing_mask(character_masks, token_character, threshold=0.5):
    return (character_masks >= threshold).permute(0, 1, 3, 2)[..., token_character]

def chunk_means(scores, chunk_starts):  # wrong on purpose: one mean for the whole video
    return scores.mean(1, keepdim=True)

def my_v_target(x0, noise, alphas_cumprod, t):
    raise NotImplementedError("not yet")

def my_box_to_msk(box, height, width):  # misspelt
    return None
'''


def _cli(*args, cwd=None):
    """The command in a subprocess, as a learner runs it."""
    return subprocess.run([sys.executable, "-m", "labkit.exercises", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def _main(*args):
    """The same command in this process (faster): exit status, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def _one_error_line(out, *needles):
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def test_listing_names_every_registered_exercise_under_its_notebook():
    out = _cli()
    assert out.returncode == 0, out.stderr
    for name in list_exercises():
        assert f"    {name}" in out.stdout
    assert "09_multi_character" in out.stdout and "10_drift_lab" in out.stdout
    headings = [line for line in out.stdout.splitlines() if line[:2].isdigit()]
    assert headings == sorted(set(headings)), f"one heading per notebook, in notebook order: {headings}"


def test_a_solutions_file_is_checked_function_by_function(tmp_path: Path):
    path = tmp_path / "solutions.py"
    path.write_text(SOLUTIONS)
    results = run_solutions(path)
    assert results["region_routing_mask"] is True, "my_<name> counts as the solution of <name>"
    assert results["chunk_means"] is False
    assert results["v_target"] is None, "a stub that raises NotImplementedError is not attempted"
    assert results.get("box_to_mask", None) is None, "an exercise the file does not define is not attempted"
    out = _cli(str(path))
    assert out.returncode == 1, "any failing exercise makes the command fail"
    assert "region_routing_mask" in out.stdout and "PASS" in out.stdout and "FAIL" in out.stdout
    assert "not attempted" in out.stdout and "hint:" in out.stdout
    assert "note: my_box_to_msk (did you mean my_box_to_mask?)" in out.stderr


def test_a_missing_file_is_one_line_and_exit_2(tmp_path):
    _one_error_line(_cli(str(tmp_path / "missing.py")), "no such file", "missing.py")


def test_a_folder_is_one_line_and_exit_2(tmp_path):
    _one_error_line(_main(str(tmp_path)), "is not a file")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "locked.py"
    path.write_text("def box_to_mask(box, height, width):\n    return None\n")
    path.chmod(0)
    try:
        _one_error_line(_main(str(path)), "cannot read", "locked.py")
    finally:
        path.chmod(0o644)


def test_a_binary_file_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "binary.py"
    path.write_bytes(b"\xff\xfe\x00\x81" * 10)
    _one_error_line(_main(str(path)), "binary.py")


def test_a_file_that_does_not_parse_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("def box_to_mask(:\n")
    _one_error_line(_main(str(path)), "is not valid Python", "line 1")


def test_a_file_that_raises_while_loading_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "imports.py"
    path.write_text("import no_such_module_for_labkit\n")
    _one_error_line(_main(str(path)), "ModuleNotFoundError", "line 1")


def test_a_file_with_every_name_misspelt_lists_the_names_and_suggests_the_closest(tmp_path):
    path = tmp_path / "typos.py"
    path.write_text("def my_box_to_msk(box, height, width):\n    return None\n\n"
                    "def chunk_mean(scores, chunk_starts):\n    return None\n")
    line = _one_error_line(_main(str(path)), "defines none of the exercise functions", "box_to_mask", "v_target",
                           "my_box_to_msk (did you mean my_box_to_mask?)", "chunk_mean (did you mean chunk_means?)")
    assert "0/0" not in line
    with pytest.raises(SolutionsError):
        run_solutions(path)


def test_an_empty_file_names_the_expected_functions(tmp_path):
    path = tmp_path / "empty.py"
    path.write_text("")
    _one_error_line(_main(str(path), "--notebook", "05"), "defines none", "temporal_identity")


def test_an_unknown_notebook_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "solutions.py"
    path.write_text(SOLUTIONS)
    _one_error_line(_main(str(path), "--notebook", "42"), "no exercises in notebook '42'")


def test_solution_prints_a_worked_solution_and_refuses_unknown_names():
    out = _main("--solution", "chunk_means")
    assert out.returncode == 0 and "def my_chunk_means" in out.stdout
    _one_error_line(_main("--solution", "chunk_mean"), "did you mean 'chunk_means'")
