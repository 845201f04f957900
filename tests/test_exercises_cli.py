"""``python -m labkit.exercises``: lists every exercise by notebook and checks a learner's solutions file."""

import subprocess
import sys
from pathlib import Path

from labkit.exercises import list_exercises, run_solutions

SOLUTIONS = '''
import torch

def my_region_routing_mask(character_masks, token_character, threshold=0.5):
    return (character_masks >= threshold).permute(0, 1, 3, 2)[..., token_character]

def chunk_means(scores, chunk_starts):  # wrong on purpose: one mean for the whole video
    return scores.mean(1, keepdim=True)
'''


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "labkit.exercises", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


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
    assert results.get("box_to_mask", None) is None, "an exercise the file does not define is not attempted"
    out = _cli(str(path))
    assert out.returncode == 1, "any failing exercise makes the command fail"
    assert "region_routing_mask" in out.stdout and "PASS" in out.stdout and "FAIL" in out.stdout
    assert "not attempted" in out.stdout
