"""The exercise mechanism: stubs are "not attempted", check() reports, hints are graded, solutions on request.

The checkers' power (labkit's own answer passes, plausible wrong ones fail) is tested in
tests/test_exercises_wrong_*.py; the command line in tests/test_exercises_cli.py; the notebooks' learner and
solved copies in tests/test_exercises_notebooks.py.
"""

import re

import numpy as np
import pytest
import torch

from labkit import exercises, solutions
from labkit.exercises import CheckResult, check, hint, list_exercises, reference, solution

ALL = list_exercises()


def _stub(*args, **kwargs):
    raise NotImplementedError("exercise: write this function")


def _wrong_cosine(a, b):
    return a @ b.T  # not normalised


@pytest.fixture(autouse=True)
def _fresh_hint_state():
    exercises._STATE.clear()
    yield
    exercises._STATE.clear()


def test_every_notebook_from_01_has_exercises_with_a_reference_a_solution_and_graded_hints():
    notebooks = {exercises._REGISTRY[n].notebook for n in ALL}
    assert notebooks == {f"{i:02d}" for i in range(1, 11)}
    for name in ALL:
        ex = exercises._REGISTRY[name]
        assert callable(ex.reference) and callable(getattr(solutions, f"my_{name}"))
        assert len(ex.hints) >= 2, f"{name}: graded hints, general to specific"


@pytest.mark.parametrize("name", ALL)
def test_hints_and_diagnoses_describe_without_giving_the_code(name):
    ex = exercises._REGISTRY[name]
    result = check(name, lambda *a, **k: torch.zeros(0), verbose=False)  # fails every case: each diagnosis shows
    texts = list(ex.hints) + [c.diagnosis for c in result.cases]
    code = re.compile(r"torch\.|dim=|rearrange\(|\.mean\(|\.sum\(|\.norm\(|softmax\(| @ |\[:|\.T\b|->|==|>=|<=|"
                      r"\bdef |return |import ")
    for text in texts:
        assert text, f"{name}: every case has a diagnosis"
        assert not code.search(text), f"{name}: a hint gives code away: {text!r}"


def test_a_stub_is_not_attempted_and_the_notebook_goes_on_with_labkits_own(capsys):
    result = check("cosine_similarity_matrix", _stub)
    out = capsys.readouterr().out
    assert result.passed is None and not result
    assert result.function is reference("cosine_similarity_matrix")
    assert "not attempted yet" in out and "labkit's own implementation" in out
    assert "FAIL" not in out and "PASS" not in out


def test_the_result_shows_nothing_under_a_notebook_cell_and_is_truthy_only_when_it_passed():
    ok = check("cosine_similarity_matrix", solutions.my_cosine_similarity_matrix, verbose=False)
    bad = check("cosine_similarity_matrix", _wrong_cosine, verbose=False)
    assert isinstance(ok, CheckResult) and ok and not bad
    assert ok.passed is True and bad.passed is False
    assert ok.function is solutions.my_cosine_similarity_matrix, "a passing function is the one used next"
    assert bad.function is reference("cosine_similarity_matrix"), "a failing one is replaced by labkit's"
    assert ok._ipython_display_() is None, "IPython calls this instead of printing a repr: no stray True"
    assert "passed" in repr(ok) and "failed" in repr(bad)


def test_passing_prints_pass_lines_and_says_what_follows_uses_it(capsys):
    check("box_to_mask", solutions.my_box_to_mask)
    out = capsys.readouterr().out
    assert "PASS" in out and "FAIL" not in out and "all 16 cases passed" in out
    assert "What follows uses your my_box_to_mask" in out


def test_failing_prints_the_failing_cases_with_shapes_and_points_to_hint_and_solution(capsys):
    check("cosine_similarity_matrix", lambda a, b: (a @ b.T).T)
    out = capsys.readouterr().out
    assert "FAIL  a (5, 8) against b (3, 8): shape (3, 5), expected (5, 3)" in out
    assert "hint('cosine_similarity_matrix')" in out and "solution('cosine_similarity_matrix')" in out
    assert exercises._REGISTRY["cosine_similarity_matrix"].hints[0] not in out, "hints only on request"


def test_hints_open_after_a_failed_check_and_grow_more_specific(capsys):
    assert "hints open after a failed check" in hint("box_to_mask")
    check("box_to_mask", _stub, verbose=False)
    assert "hints open after a failed check" in hint("box_to_mask"), "a stub is not a failure"
    check("box_to_mask", lambda box, h, w: solutions.my_box_to_mask(box, h, w).squeeze(), verbose=False)
    first = hint("box_to_mask")
    assert first.startswith("Hint 1 of 3") and "a 1x1 image" in first and "squeezed" in first
    second, third = hint("box_to_mask"), hint("box_to_mask")
    hints = exercises._REGISTRY["box_to_mask"].hints
    assert hints[0] in second and hints[1] in third
    assert "solution('box_to_mask')" in hint("box_to_mask")
    check("box_to_mask", solutions.my_box_to_mask, verbose=False)
    assert "passed" in hint("box_to_mask")


def test_other_failing_cases_start_the_hints_again_from_the_diagnosis():
    check("chunk_means", lambda s, c: s.mean(1, keepdim=True), verbose=False)
    hint("chunk_means")
    hint("chunk_means")
    check("chunk_means", lambda s, c: solutions.my_chunk_means(s, c).float(), verbose=False)
    assert hint("chunk_means").startswith("Hint 1 of"), "a new failure gets its own diagnosis first"


def test_solution_prints_the_worked_solution_on_request(capsys):
    source = solution("v_target")
    assert "def my_v_target(x0, noise, alphas_cumprod, t):" in source
    assert "def my_v_target" in capsys.readouterr().out


def test_unknown_exercise_names_the_closest_and_the_known_ones():
    with pytest.raises(KeyError, match="did you mean 'box_to_mask'"):
        check("box_to_mask2", lambda: None)
    with pytest.raises(KeyError, match="chunk_means"):
        hint("no_such_exercise")


def test_an_exception_in_the_learners_code_is_a_fail_line_not_a_crash(capsys):
    def broken(a, b):
        raise ZeroDivisionError("oops")

    assert check("cosine_similarity_matrix", broken).passed is False
    out = capsys.readouterr().out
    assert "FAIL" in out and "ZeroDivisionError: oops" in out


def test_quiet_check_prints_nothing(capsys):
    assert check("box_to_mask", _stub, verbose=False).passed is None
    assert check("box_to_mask", lambda b, h, w: None, verbose=False).passed is False
    assert capsys.readouterr().out == ""


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        exercises.register("box_to_mask", "02", "again", reference=len)(lambda fn: [])


def test_compare_checks_type_shape_dtype_then_values():
    assert exercises.compare(torch.ones(2, 3), torch.ones(2, 3)) == ""
    assert "shape" in exercises.compare(torch.ones(3, 2), torch.ones(2, 3))
    assert "dtype" in exercises.compare(torch.ones(2, 3).double(), torch.ones(2, 3))
    assert "differ" in exercises.compare(torch.ones(2, 3) * 1.1, torch.ones(2, 3))
    assert "nan" in exercises.compare(torch.full((2,), float("nan")), torch.zeros(2))
    assert "entries differ" in exercises.compare(torch.tensor([True, False]), torch.tensor([True, True]))
    assert "numpy.ndarray" in exercises.compare(np.ones((2, 3)), torch.ones(2, 3))


def test_solve_source_replaces_each_stub_with_its_solution():
    cell = ('from labkit.exercises import check\n\n\ndef my_v_target(x0, noise, alphas_cumprod, t):\n'
            '    # TODO (exercise): the v target\n    raise NotImplementedError("exercise v_target")\n\n\n'
            'my_v_target = check("v_target", my_v_target).function\n')
    solved, names = solutions.solve_source(cell)
    assert names == ["v_target"] and "NotImplementedError" not in solved
    assert "alphas_cumprod[t].reshape" in solved and solved.endswith('check("v_target", my_v_target).function\n')
