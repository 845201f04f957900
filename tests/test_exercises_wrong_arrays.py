"""The checkers of notebooks 02, 03, 06, 08, 09 and 10 pass labkit's own answer and reject plausible wrong ones.

Each wrong version is one a learner could write from the exercise's description: right shapes on easy inputs,
often right values too, wrong on an edge case, a batch of one, another input form, the dtype, or because it
changes its input in place. Where it matters, the test also names the failure the checker must report.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labkit import solutions
from labkit.exercises import check, reference

NAMES = ["box_to_mask", "cosine_similarity_matrix", "mean_reference_embedding", "v_target", "region_routing_mask",
         "chunk_means"]


# ------------------------------------------------------------------------------------------- box_to_mask (02)
def _box(box, height, width, near=">=", far="<", centre=0.5, swap=False):
    x1, y1, x2, y2 = (float(v) for v in box)
    cols, rows = torch.arange(width) + centre, torch.arange(height) + centre
    if swap:
        cols, rows = torch.arange(height) + centre, torch.arange(width) + centre
    ops = {">=": torch.ge, ">": torch.gt, "<": torch.lt, "<=": torch.le}
    ix = ops[near](cols, x1) & ops[far](cols, x2)
    iy = ops[near](rows, y1) & ops[far](rows, y2)
    return (iy[:, None] & ix[None, :]).float() if not swap else (ix[:, None] & iy[None, :]).float()


def _box_round_slices(box, height, width):
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    mask = torch.zeros(height, width)
    mask[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = 1
    return mask


def _box_int_slices(box, height, width):
    x1, y1, x2, y2 = (int(v) for v in box)
    mask = torch.zeros(height, width)
    mask[y1:y2, x1:x2] = 1
    return mask


def _box_clamps_in_place(box, height, width):
    if torch.is_tensor(box):
        box.clamp_(min=0)
    return _box(box, height, width)


def _box_ceil_slices(box, height, width):
    """A correct version: the first pixel with centre >= x1 is ceil(x1 - 0.5); the end is ceil(x2 - 0.5)."""
    import math

    x1, y1, x2, y2 = (math.ceil(float(v) - 0.5) for v in box)
    mask = torch.zeros(height, width)
    mask[min(max(y1, 0), height):max(y2, 0), min(max(x1, 0), width):max(x2, 0)] = 1
    return mask


BOX_WRONG = [
    ("x and y swapped", lambda b, h, w: _box(b, h, w, swap=True), None),
    ("pixel corners instead of centres", lambda b, h, w: _box(b, h, w, centre=0.0), None),
    ("half-pixel near edges: > instead of >=", lambda b, h, w: _box(b, h, w, near=">"), None),
    ("far edges inclusive: <= instead of <", lambda b, h, w: _box(b, h, w, far="<="), None),
    ("both edges inclusive", lambda b, h, w: _box(b, h, w, near=">=", far="<="), None),
    ("rounded slices", _box_round_slices, None),
    ("int() slices (negative starts wrap)", _box_int_slices, None),
    ("(width, height) instead of (height, width)", lambda b, h, w: _box(b, h, w).T, None),
    ("bool instead of float", lambda b, h, w: _box(b, h, w).bool(), "dtype"),
    ("float64 instead of float32", lambda b, h, w: _box(b, h, w).double(), "dtype"),
    ("a numpy array", lambda b, h, w: _box(b, h, w).numpy(), "expected a torch tensor"),
    ("squeezed: a 1-row image loses its row axis", lambda b, h, w: _box(b, h, w).squeeze(), "shape"),
    ("clamps a tensor box in place", _box_clamps_in_place, "in place"),
]


# ----------------------------------------------------------------------------- cosine_similarity_matrix (03)
def _cos_in_place(a, b):
    a /= a.norm(dim=1, keepdim=True).clamp_min(1e-8)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-8)
    return a @ b.T


COSINE_WRONG = [
    ("normalised along columns", lambda a, b: F.normalize(a, dim=0) @ F.normalize(b, dim=0).T, None),
    ("no normalisation", lambda a, b: a @ b.T, None),
    ("only a normalised", lambda a, b: F.normalize(a, dim=1) @ b.T, None),
    ("(M, N) instead of (N, M)", lambda a, b: F.normalize(b, dim=1) @ F.normalize(a, dim=1).T, "shape"),
    ("no guard against zero rows", lambda a, b: (a / a.norm(dim=1, keepdim=True)) @ (b / b.norm(dim=1, keepdim=True)).T,
     "nan"),
    ("row i with row i only", lambda a, b: F.cosine_similarity(a, b, dim=1), None),
    ("squeezed result", lambda a, b: (F.normalize(a, dim=1) @ F.normalize(b, dim=1).T).squeeze(), "shape"),
    ("a guard that is too large", lambda a, b: (a / (a.norm(dim=1, keepdim=True) + 1e-3))
     @ (b / (b.norm(dim=1, keepdim=True) + 1e-3)).T, None),
    ("one norm for the whole matrix", lambda a, b: a @ b.T / (a.norm() * b.norm()).clamp_min(1e-8), None),
    ("normalises a in place", _cos_in_place, "in place"),
    ("always float32", lambda a, b: (F.normalize(a, dim=1) @ F.normalize(b, dim=1).T).float(), "dtype"),
]


# ----------------------------------------------------------------------------- mean_reference_embedding (06)
def _mean_in_place(e):
    e /= e.shape[-2]
    mean = e.sum(dim=-2)
    return mean / mean.norm(dim=-1, keepdim=True)


MEAN_WRONG = [
    ("not re-normalised", lambda e: e.mean(dim=-2), None),
    ("averages the embedding axis", lambda e: e.mean(dim=-1), None),
    ("dim=0: the batch axis for (B, R, D)", lambda e: F.normalize(e.mean(dim=0), dim=-1), None),
    ("dim=1: the embedding axis for (R, D)", lambda e: F.normalize(e.mean(dim=1), dim=-1), None),
    ("first reference only", lambda e: e[..., 0, :], None),
    ("B=1 squeezed away", lambda e: F.normalize(e.mean(dim=-2), dim=-1).squeeze(), "shape"),
    ("keeps the reference axis", lambda e: F.normalize(e.mean(dim=-2, keepdim=True), dim=-1), "shape"),
    ("normalises over the wrong axis", lambda e: F.normalize(e.mean(dim=-2), dim=0), None),
    ("sum instead of mean, not normalised", lambda e: e.sum(dim=-2), None),
    ("divides the input in place", _mean_in_place, "in place"),
]


# --------------------------------------------------------------------------------------------- v_target (08)
def _v(x0, noise, ab, t, view=None, roots=True):
    a = ab[t].reshape(-1, *[1] * (x0.ndim - 1)) if view is None else ab[t].view(*view)
    return (a.sqrt() * noise - (1 - a).sqrt() * x0) if roots else (a * noise - (1 - a) * x0)


def _v_sqrt_in_place(x0, noise, ab, t):
    root = ab.sqrt_()[t].reshape(-1, *[1] * (x0.ndim - 1))
    return root * noise - (1 - root**2).sqrt() * x0


V_WRONG = [
    ("the noise (epsilon target)", lambda x0, n, ab, t: n, None),
    ("x0 and noise swapped", lambda x0, n, ab, t: _v(n, x0, ab, t), None),
    ("no square roots", lambda x0, n, ab, t: _v(x0, n, ab, t, roots=False), None),
    ("one alpha for the whole batch", lambda x0, n, ab, t: ab[t].mean().sqrt() * n - (1 - ab[t].mean()).sqrt() * x0,
     None),
    ("always 5-D (B, 1, 1, 1, 1)", lambda x0, n, ab, t: _v(x0, n, ab, t, view=(-1, 1, 1, 1, 1)), None),
    ("always 4-D (B, 1, 1, 1)", lambda x0, n, ab, t: _v(x0, n, ab, t, view=(-1, 1, 1, 1)), None),
    ("alphas_cumprod[t - 1]", lambda x0, n, ab, t: _v(x0, n, ab, t - 1), None),
    ("coefficients swapped", lambda x0, n, ab, t: _v(x0, n, 1 - ab, t), None),
    ("sign flipped", lambda x0, n, ab, t: -_v(x0, n, ab, t), None),
    ("squeezed: B=1 indexing by t.item()", lambda x0, n, ab, t: _v(x0, n, ab, t).squeeze(0) if len(t) == 1
     else _v(x0, n, ab, t), "shape"),
    ("square roots of alphas_cumprod taken in place", _v_sqrt_in_place, "in place"),
    ("float64 result", lambda x0, n, ab, t: _v(x0.double(), n.double(), ab.double(), t), "dtype"),
]


# ---------------------------------------------------------------------------------- region_routing_mask (09)
def _route(m, owner, threshold=0.5, op=torch.ge, fixed=None):
    covered = op(m, threshold if fixed is None else fixed).permute(0, 1, 3, 2)
    return covered[..., owner]


def _route_in_place(m, owner, threshold=0.5):
    return m.ge_(threshold).bool().permute(0, 1, 3, 2)[..., owner]


ROUTE_WRONG = [
    ("> instead of >=", lambda m, o, threshold=0.5: _route(m, o, threshold, op=torch.gt), None),
    ("a float mask", lambda m, o, threshold=0.5: _route(m, o, threshold).float(), "dtype"),
    ("a long mask", lambda m, o, threshold=0.5: _route(m, o, threshold).long(), "dtype"),
    ("threshold fixed at 0.5", lambda m, o, threshold=0.5: _route(m, o, fixed=0.5), None),
    ("(B, F, L, N): token axis before patch axis",
     lambda m, o, threshold=0.5: _route(m, o, threshold).transpose(-1, -2), None),
    ("token index used as character", lambda m, o, threshold=0.5:
     (m >= threshold).permute(0, 1, 3, 2)[..., torch.arange(len(o)) % m.shape[2]], None),
    ("no permute: reshape (C, N) -> (N, C)", lambda m, o, threshold=0.5:
     (m >= threshold).reshape(*m.shape[:2], m.shape[3], m.shape[2])[..., o], None),
    ("squeezed: B=1 or F=1 dropped", lambda m, o, threshold=0.5: _route(m, o, threshold).squeeze(), "shape"),
    ("thresholds the masks in place", _route_in_place, "in place"),
    ("rounds the coverage", lambda m, o, threshold=0.5: (m.round() > 0).permute(0, 1, 3, 2)[..., o], None),
]


# ----------------------------------------------------------------------------------------- chunk_means (10)
def _chunks(scores, starts, keep_empty=False, end=None, dim=1):
    bounds = list(starts) + [scores.shape[1] if end is None else end]
    pairs = [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a or keep_empty]
    return torch.stack([scores[:, a:b].mean(dim=1) for a, b in pairs], dim=dim)


def _chunks_in_place(scores, starts):
    bounds = list(starts) + [scores.shape[1]]
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b > a:
            scores[:, a] = scores[:, a:b].mean(dim=1)  # stores the chunk means in the first frame of each chunk
    return scores[:, [a for a, b in zip(bounds[:-1], bounds[1:]) if b > a]]


CHUNK_WRONG = [
    ("empty chunks kept (nan)", lambda s, c: _chunks(s, c, keep_empty=True), "shape"),
    ("one mean for the whole video", lambda s, c: s.mean(1, keepdim=True), None),
    ("last chunk misses the last frame", lambda s, c: _chunks(s, c, end=s.shape[1] - 1), None),
    ("(chunks, B) instead of (B, chunks)", lambda s, c: _chunks(s, c, dim=0), None),
    ("squeezed: B=1 dropped", lambda s, c: _chunks(s, c).squeeze(), "shape"),
    ("last chunk left out", lambda s, c: torch.stack([s[:, a:b].mean(1) for a, b in zip(c[:-1], c[1:]) if b > a], 1),
     None),
    ("a list of means", lambda s, c: [m for m in _chunks(s, c).T], "expected a torch tensor"),
    ("chunk means over every video together", lambda s, c: _chunks(s.mean(0, keepdim=True).expand_as(s), c), None),
    ("empty chunks as 0", lambda s, c: _chunks(s, c, keep_empty=True).nan_to_num(0.0), None),
    ("writes the means into the scores", _chunks_in_place, "in place"),
    ("always float32", lambda s, c: _chunks(s, c).float(), "dtype"),
]

def _widgets_chunk_means(scores, chunk_starts):
    """The Drift Lab's own chunk means (labkit.widgets) agree with the exercise's reference."""
    from labkit.widgets import chunk_means

    return chunk_means(scores, chunk_starts)


WRONG = {"box_to_mask": BOX_WRONG, "cosine_similarity_matrix": COSINE_WRONG, "mean_reference_embedding": MEAN_WRONG,
         "v_target": V_WRONG, "region_routing_mask": ROUTE_WRONG, "chunk_means": CHUNK_WRONG}
CORRECT = {
    "box_to_mask": [_box, _box_ceil_slices, solutions.my_box_to_mask],
    "cosine_similarity_matrix": [lambda a, b: F.normalize(a, dim=1, eps=1e-8) @ F.normalize(b, dim=1, eps=1e-8).T,
                                 lambda a, b: F.cosine_similarity(a[:, None], b[None], dim=-1),
                                 lambda a, b: a @ b.T / (a.norm(dim=1)[:, None] * b.norm(dim=1)[None] + 1e-8),
                                 solutions.my_cosine_similarity_matrix],
    "mean_reference_embedding": [lambda e: F.normalize(e.mean(dim=-2), dim=-1), solutions.my_mean_reference_embedding],
    "v_target": [_v, solutions.my_v_target],
    "region_routing_mask": [lambda m, o, threshold=0.5: torch.einsum("bfcn,cl->bfnl", (m >= threshold).float(),
                                                                     F.one_hot(o, m.shape[2]).T.float()).bool(),
                            solutions.my_region_routing_mask],
    "chunk_means": [lambda s, c: torch.stack([s[:, a:b].mean(1) for a, b in zip(c, [*c[1:], s.shape[1]]) if b > a], 1),
                    solutions.my_chunk_means, _widgets_chunk_means],
}


def _cases(table):
    return [pytest.param(name, label, fn, expect, id=f"{name}-{label}") for name, rows in table.items()
            for label, fn, expect in rows]


@pytest.mark.parametrize("name", NAMES)
def test_labkits_own_implementation_and_correct_variants_pass(name):
    assert check(name, reference(name), verbose=False).passed is True
    for fn in CORRECT[name]:
        result = check(name, fn, verbose=False)
        assert result.passed is True, [(c.description, c.detail) for c in result.cases if not c.passed]


@pytest.mark.parametrize("name, label, fn, expect", _cases(WRONG))
def test_a_plausible_wrong_solution_is_rejected(name, label, fn, expect):
    result = check(name, fn, verbose=False)
    assert result.passed is False, f"{name}: the checker passed '{label}'"
    assert result.function is reference(name), "a failing solution is replaced by labkit's own"
    if expect:
        details = " | ".join(c.detail for c in result.cases if not c.passed)
        assert expect in details, f"'{label}' should fail with '{expect}', got: {details}"


def test_every_checker_here_rejects_at_least_eight_wrong_solutions():
    for name in NAMES:
        assert len(WRONG[name]) >= 8, name


def test_a_numpy_box_mask_is_not_a_tensor_but_the_message_says_so(capsys):
    check("box_to_mask", lambda b, h, w: np.zeros((h, w), np.float32))
    assert "returned numpy.ndarray, expected a torch tensor" in capsys.readouterr().out
