"""Exercise checkers: each accepts labkit's own answer and rejects plausible wrong ones; check() reports."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labkit import exercises
from labkit.exercises import check, list_exercises


# ------------------------------------------------------------------------------------------- box_to_mask (02)
def box_mask_reference(box, height, width):
    from labkit.faces import box_to_mask

    return box_to_mask(box, height, width)


def box_mask_with_centres(box, height, width):
    """A learner's correct version: pixel centres at j + 0.5, i + 0.5, half-open box."""
    x1, y1, x2, y2 = [float(v) for v in box]
    xs = torch.arange(width) + 0.5
    ys = torch.arange(height) + 0.5
    return (((ys >= y1) & (ys < y2))[:, None] & ((xs >= x1) & (xs < x2))[None, :]).float()


def box_mask_xy_swapped(box, height, width):
    """x compared with rows and y with columns."""
    x1, y1, x2, y2 = [float(v) for v in box]
    rows = torch.arange(height) + 0.5
    cols = torch.arange(width) + 0.5
    return (((rows >= x1) & (rows < x2))[:, None] & ((cols >= y1) & (cols < y2))[None, :]).float()


def box_mask_inclusive_edges(box, height, width):
    """Off by one: pixel indices with both edges inclusive (one column and one row too many)."""
    x1, y1, x2, y2 = [float(v) for v in box]
    xs, ys = torch.arange(width).float(), torch.arange(height).float()
    return (((ys >= y1) & (ys <= y2))[:, None] & ((xs >= x1) & (xs <= x2))[None, :]).float()


def box_mask_pixel_corners(box, height, width):
    """Compares the boxes with pixel corners (j, i) instead of centres: wrong for fractional boxes."""
    x1, y1, x2, y2 = [float(v) for v in box]
    xs, ys = torch.arange(width).float(), torch.arange(height).float()
    return (((ys >= y1) & (ys < y2))[:, None] & ((xs >= x1) & (xs < x2))[None, :]).float()


def box_mask_truncated_slices(box, height, width):
    """Slicing with int() coordinates: truncates fractions and wraps negative starts around."""
    x1, y1, x2, y2 = [int(v) for v in box]
    mask = torch.zeros(height, width)
    mask[y1:y2, x1:x2] = 1
    return mask


def box_mask_width_first(box, height, width):
    """The right pixels in a (width, height) array."""
    return box_mask_with_centres(box, height, width).T


# ----------------------------------------------------------------------------- cosine_similarity_matrix (03)
def cosine_reference(a, b):
    from labkit.faces import cosine_similarity_matrix

    return cosine_similarity_matrix(a, b)


def cosine_with_clamped_norms(a, b):
    """A learner's correct version."""
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-8)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-8)
    return a @ b.T


def cosine_normalised_along_columns(a, b):
    """Wrong axis: divides each column by its norm (dim=0)."""
    return F.normalize(a, dim=0) @ F.normalize(b, dim=0).T


def cosine_without_normalisation(a, b):
    """Missing normalisation: the plain dot products."""
    return a @ b.T


def cosine_only_a_normalised(a, b):
    """Half the normalisation: b keeps its length."""
    return F.normalize(a, dim=1) @ b.T


def cosine_transposed(a, b):
    """The (M, N) matrix instead of (N, M)."""
    return F.normalize(b, dim=1) @ F.normalize(a, dim=1).T


def cosine_without_eps(a, b):
    """Divides by the raw norm: a zero vector gives nan."""
    return (a / a.norm(dim=1, keepdim=True)) @ (b / b.norm(dim=1, keepdim=True)).T


def cosine_rowwise(a, b):
    """Pairs row i with row i only (torch's cosine_similarity without broadcasting)."""
    return F.cosine_similarity(a, b, dim=1)


CORRECT = {
    "box_to_mask": [box_mask_reference, box_mask_with_centres,
                    lambda box, h, w: box_mask_with_centres(box, h, w).bool().numpy()],  # bool numpy is fine
    "cosine_similarity_matrix": [cosine_reference, cosine_with_clamped_norms],
}
WRONG = {
    "box_to_mask": [box_mask_xy_swapped, box_mask_inclusive_edges, box_mask_pixel_corners,
                    box_mask_truncated_slices, box_mask_width_first],
    "cosine_similarity_matrix": [cosine_normalised_along_columns, cosine_without_normalisation,
                                 cosine_only_a_normalised, cosine_transposed, cosine_without_eps, cosine_rowwise],
}


def _params(table):
    return [pytest.param(name, fn, id=f"{name}-{getattr(fn, '__name__', 'lambda')}-{i}")
            for name, fns in table.items() for i, fn in enumerate(fns)]


def test_notebooks_02_and_03_have_their_exercises():
    assert "box_to_mask" in list_exercises("02")
    assert "cosine_similarity_matrix" in list_exercises("03")


@pytest.mark.parametrize("name, fn", _params(CORRECT))
def test_checker_accepts_correct_versions(name, fn):
    assert check(name, fn, verbose=False) is True


@pytest.mark.parametrize("name, fn", _params(WRONG))
def test_checker_rejects_a_plausible_wrong_version(name, fn):
    assert check(name, fn, verbose=False) is False


def test_each_checker_rejects_at_least_three_wrong_versions():
    for name, fns in WRONG.items():
        rejected = [fn.__name__ for fn in fns if not check(name, fn, verbose=False)]
        assert len(rejected) >= 3, (name, rejected)


def test_check_prints_pass_lines_and_no_hint_when_all_pass(capsys):
    assert check("cosine_similarity_matrix", cosine_reference) is True
    out = capsys.readouterr().out
    assert "PASS" in out and "FAIL" not in out and "hint" not in out
    assert "cases passed" in out


def test_check_prints_fail_lines_with_what_differs_and_the_hint(capsys):
    ok = check("box_to_mask", box_mask_xy_swapped)
    out = capsys.readouterr().out
    assert ok is False
    assert "FAIL" in out and "hint:" in out
    assert exercises._REGISTRY["box_to_mask"].hint[:30] in out


def test_an_exception_in_the_learners_code_is_a_fail_line_not_a_crash(capsys):
    def broken(a, b):
        raise ZeroDivisionError("oops")

    assert check("cosine_similarity_matrix", broken) is False
    out = capsys.readouterr().out
    assert "FAIL" in out and "ZeroDivisionError: oops" in out


def test_wrong_shape_is_reported_as_a_shape(capsys):
    check("cosine_similarity_matrix", cosine_transposed)
    assert "shape (3, 5), expected (5, 3)" in capsys.readouterr().out


def test_quiet_check_prints_nothing_and_returns_a_bool(capsys):
    result = check("box_to_mask", box_mask_truncated_slices, verbose=False)
    assert result is False and capsys.readouterr().out == ""


def test_unknown_exercise_names_the_known_ones():
    with pytest.raises(KeyError, match="box_to_mask"):
        check("no_such_exercise", lambda: None)


def test_learner_function_returning_something_else_fails_cleanly(capsys):
    assert check("cosine_similarity_matrix", lambda a, b: "not a tensor") is False
    assert check("box_to_mask", lambda box, h, w: None) is False
    assert "FAIL" in capsys.readouterr().out


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        exercises.register("box_to_mask", "02", "again")(lambda fn: [])


def test_compare_checks_shape_then_values():
    assert exercises.compare(torch.ones(2, 3), torch.ones(2, 3)) == ""
    assert "shape" in exercises.compare(torch.ones(3, 2), torch.ones(2, 3))
    assert "differ" in exercises.compare(torch.ones(2, 3) * 1.1, torch.ones(2, 3))
    assert exercises.compare(np.ones((2, 3)), torch.ones(2, 3)) == ""
