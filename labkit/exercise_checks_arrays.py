"""Checkers of the tensor exercises: notebooks 02, 03, 06, 08, 09 and 10 (see ``labkit.exercises``).

Each checker compares the learner's function with labkit's own on several cases: edge cases on both sides
of every boundary, batches of one, every input form the exercise promises, the result's dtype, and inputs
left unchanged. Each case carries a diagnosis (hint level 1) that says what a failure there means.
"""

from __future__ import annotations

import torch

from labkit.exercises import register, run_case


# ================================================================================================ notebook 02
def _box_to_mask(box, height, width):
    from labkit.faces import box_to_mask

    return box_to_mask(box, height, width)


NEAR = ("a pixel whose centre lies exactly on the box's left or top edge counts as inside; one whose centre is "
        "a hair before that edge does not.")
FAR = ("the right and bottom edges are open: a pixel whose centre lies exactly on x2 or y2 is outside, one whose "
       "centre is a hair before it is inside.")


@register("box_to_mask", "02", reference=_box_to_mask, hints=(
    "Compare pixel CENTRES with the box, not pixel indices or corners, and keep the two comparisons of each axis "
    "different: the near edge is closed, the far edge open.",
    "x belongs to columns (the width axis, the last one), y to rows. Build one condition per axis for every "
    "pixel and combine them, so no rounding and no slicing is needed; the result is a float32 tensor "
    "(height, width), whatever its size.",
))
def _check_box_to_mask(fn):
    cases = [
        ("a box inside an 8x10 image", ([2.0, 1.0, 6.0, 5.0], 8, 10), "compare the pixel centres with the box."),
        ("a tall, thin box (x and y are not interchangeable)", ([1.0, 0.0, 3.0, 7.0], 8, 6),
         "x runs along columns (width), y along rows (height)."),
        ("near edges exactly on pixel centres (x1=2.5, y1=1.5)", ([2.5, 1.5, 6.0, 5.0], 8, 8), NEAR),
        ("near edges just after pixel centres (x1=2.5001, y1=1.5001)", ([2.5001, 1.5001, 6.0, 5.0], 8, 8), NEAR),
        ("near edges just before pixel centres (x1=2.4999, y1=1.4999)", ([2.4999, 1.4999, 6.0, 5.0], 8, 8), NEAR),
        ("far edges exactly on pixel centres (x2=4.5, y2=3.5)", ([0.0, 0.0, 4.5, 3.5], 6, 6), FAR),
        ("far edges just after pixel centres (x2=4.5001, y2=3.5001)", ([0.0, 0.0, 4.5001, 3.5001], 6, 6), FAR),
        ("far edges just before pixel centres (x2=4.4999, y2=3.4999)", ([0.0, 0.0, 4.4999, 3.4999], 6, 6), FAR),
        ("a box partly outside the image", ([-3.0, 4.0, 5.0, 20.0], 9, 8),
         "parts of the box outside the image are cut off; a negative coordinate is not an index from the end."),
        ("a box entirely right of the image", ([9.0, 0.0, 12.0, 3.0], 4, 5), "no pixel centre lies in it."),
        ("a box entirely above and left of the image (negative coordinates)", ([-4.0, -3.0, -1.0, -0.5], 4, 5),
         "no pixel centre lies in it; a negative coordinate is not an index from the end."),
        ("an empty box (x2 == x1)", ([3.0, 3.0, 3.0, 6.0], 6, 6), "a box of zero width contains no pixel centre."),
        ("the whole image, box as a tuple of ints", ((0, 0, 5, 4), 4, 5), "every pixel centre lies in it."),
        ("the box as a float tensor, partly left of the image", (torch.tensor([-0.7, 1.2, 3.3, 2.9]), 4, 5),
         "the box may come as a list, a tuple or a tensor."),
        ("a 1x1 image (keep both axes)", ([0.0, 0.0, 1.0, 1.0], 1, 1),
         "the result is (height, width) even when height or width is 1: nothing is squeezed away."),
        ("a one-row image (keep both axes)", ([1.0, 0.0, 3.0, 1.0], 1, 5),
         "the result is (height, width) even when height is 1."),
    ]
    return [run_case(d, fn, a, _box_to_mask(*a), diagnosis=why, names=("box", "height", "width"))
            for d, a, why in cases]


# ================================================================================================ notebook 03
def _cosine(a, b, eps: float = 1e-8):
    from labkit.faces import cosine_similarity_matrix

    return cosine_similarity_matrix(a, b, eps)


@register("cosine_similarity_matrix", "03", reference=_cosine, hints=(
    "A cosine is a dot product of two vectors of length one. Which vectors must have length one here: the rows "
    "(one face each) or the columns (one embedding dimension each)?",
    "Make every row of both inputs unit length first, then one matrix product gives all N x M cosines at once. "
    "A zero row has no direction: keep its length from reaching zero in the division, so its cosines are 0.",
))
def _check_cosine_similarity_matrix(fn):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 8, generator=g), torch.randn(3, 8, generator=g)
    scaled = torch.randn(4, 6, generator=g) * torch.tensor([[0.01], [1.0], [50.0], [3.0]])
    zero = torch.cat([torch.zeros(1, 4), torch.randn(2, 4, generator=g)])
    short = torch.randn(3, 5, generator=g) * 1e-2
    rows = "every row of a is compared with every row of b, each made unit length first."
    cases = [
        ("a (5, 8) against b (3, 8)", (a, b), rows),
        ("rows of very different lengths", (scaled, scaled), "a longer row must not look more similar."),
        ("a single row against many (N=1: keep both axes)", (a[:1], b), "the result is (N, M) even when N is 1."),
        ("many rows against a single one (M=1)", (a, b[:1]), "the result is (N, M) even when M is 1."),
        ("one row against one row (1, 1)", (a[:1], b[:1]), "the result is (1, 1), not a scalar."),
        ("512-d embeddings, N != M", (torch.randn(7, 512, generator=g), torch.randn(2, 512, generator=g)), rows),
        ("a zero vector (should give 0, not nan)", (zero, zero),
         "a zero row has no direction: its cosines are 0, not nan. Its length must not reach the division as 0."),
        ("very short but non-zero rows (length ~0.02)", (short, short),
         "a short row still has a direction: its cosines lie in [-1, 1] like any other. A guard against zero "
         "must only matter for (near) zero rows."),
        ("float64 inputs give a float64 result", (a.double(), b.double()), "keep the inputs' dtype."),
    ]
    return [run_case(d, fn, args, _cosine(*args), diagnosis=why, names=("a", "b"), atol=1e-4)
            for d, args, why in cases]


# ================================================================================================ notebook 06
def _mean_reference(embeddings):
    from labkit.metrics import reference_embedding

    return reference_embedding(embeddings) if embeddings.ndim == 3 else reference_embedding(embeddings[None])[0]


@register("mean_reference_embedding", "06", reference=_mean_reference, hints=(
    "Which axis holds the references? It is the same one for both input shapes when you count from the end.",
    "The mean of several unit vectors is shorter than 1: after averaging, give each mean length one again. "
    "Every axis except the reference axis stays, even an axis of size 1.",
))
def _check_mean_reference_embedding(fn):
    cases = []
    for shape, seed in [((3, 512), 0), ((1, 512), 1), ((4, 5, 512), 2), ((1, 3, 16), 3), ((2, 1, 16), 4),
                        ((1, 1, 8), 5), ((3, 2, 8), 6)]:
        e = torch.nn.functional.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)
        e = torch.nn.functional.normalize(e + 0.3, dim=-1)  # references of one face agree: a mean shorter than 1
        kind = "one identity (R, D)" if len(shape) == 2 else "a batch (B, R, D)"
        why = ("the references are averaged over the R axis and the mean made unit length again; "
               + ("(R, D) gives (D,)." if len(shape) == 2 else "(B, R, D) gives (B, D), even for B=1."))
        if 1 in shape[:-1]:
            why += " An axis of size 1 is still an axis."
        cases.append(run_case(f"{kind} {shape} (unit-norm)", fn, (e,), _mean_reference(e), diagnosis=why,
                              names=("embeddings",)))
    return cases


# ================================================================================================ notebook 08
def _v_target(x0, noise, alphas_cumprod, t):
    ab = alphas_cumprod[t].reshape(-1, *[1] * (x0.ndim - 1))
    return ab.sqrt() * noise - (1 - ab).sqrt() * x0


@register("v_target", "08", reference=_v_target, hints=(
    "alpha_bar_t is one number per sample, looked up at that sample's own timestep. Both square roots appear, "
    "one on the noise and one on the clean frames.",
    "The looked-up values have shape (B,); give them trailing axes of size 1 so they line up with the sample axis "
    "of x0 whatever x0's number of axes is, and leave alphas_cumprod itself untouched.",
))
def _check_v_target(fn):
    from labkit.pipeline import make_scheduler

    scheduler = make_scheduler("ddpm")
    ab = scheduler.alphas_cumprod
    cases = []
    for shape, steps in [((2, 8, 3, 4, 4), [10, 900]), ((1, 3, 4, 4), [0]), ((1, 2, 3, 4, 4), [999]),
                         ((3, 2, 3, 2, 2), [999, 500, 1]), ((4, 5), [250, 250, 700, 3]), ((2, 3, 4), [0, 999])]:
        g = torch.Generator().manual_seed(len(shape) + steps[0])
        x0, noise = torch.rand(*shape, generator=g) * 2 - 1, torch.randn(*shape, generator=g)
        t = torch.tensor(steps)
        why = (f"x0 has {len(shape)} axes: alpha_bar_t must broadcast over all but the first."
               + (" B=1 is still a batch." if shape[0] == 1 else "")
               + (" t=0 and t=999 are the first and last entries of alphas_cumprod." if {0, 999} & set(steps) else ""))
        cases.append(run_case(f"x0 {tuple(shape)}, t={steps}", fn, (x0, noise, ab.clone(), t),
                              scheduler.get_velocity(x0, noise, t), diagnosis=why,
                              names=("x0", "noise", "alphas_cumprod", "t")))
    return cases


# ================================================================================================ notebook 09
def _region_routing_mask(character_masks, token_character, threshold=0.5):
    from labkit.identity import region_routing_mask

    return region_routing_mask(character_masks, token_character, threshold=threshold)


@register("region_routing_mask", "09", reference=_region_routing_mask, hints=(
    "Work in two steps: first, for every patch, which characters cover it (a yes/no per character); then, for "
    "every identity token, look up the answer of the character that owns it.",
    "'At least threshold' includes the threshold itself, and the threshold is the argument, not a constant. The "
    "result is a bool tensor (labkit's attention refuses other dtypes) with the patch axis before the token axis, "
    "and every axis kept even when its size is 1.",
))
def _check_region_routing_mask(fn):
    g = torch.Generator().manual_seed(0)
    two = torch.rand(1, 2, 2, 16, generator=g)
    owner2 = torch.tensor([0, 0, 0, 1, 1, 1])                     # 2 tokens + a separator per character
    four = torch.rand(2, 3, 4, 9, generator=g)
    owner4 = torch.arange(4).repeat_interleave(3)
    edge = torch.tensor([[[[0.5, 0.49999, 0.50001, 1.0], [0.5, 0.0, 0.0, 0.7]]]])  # (1, 1, 2, 4)
    low = torch.tensor([[[[0.3, 0.29999, 0.30001, 0.2], [0.0, 0.3, 0.6, 0.29]]]])
    square = torch.rand(2, 1, 3, 3, generator=g)                  # C == N: a swapped axis keeps the shape
    threshold = "'at least threshold' includes a patch covered exactly at the threshold; just below is out."
    cases = [
        ("2 characters, soft masks, separators owned by their character", (two, owner2), {},
         "each token's column is its owner's coverage of every patch, compared with the threshold."),
        ("4 characters, B=2, F=3", (four, owner4), {}, "(B, F, C, N) gives (B, F, N, L)."),
        ("patches covered at, just below and just above the threshold; a patch in no face; overlapping faces",
         (edge, torch.tensor([0, 1])), {}, threshold),
        ("threshold=0.3 passed explicitly, values at, below and above it", (low, torch.tensor([1, 0, 1])),
         {"threshold": 0.3}, "use the threshold argument, not a fixed 0.5. " + threshold),
        ("tokens listed out of character order", (two, torch.tensor([1, 0, 1, 0])), {},
         "look up each token's owner; tokens are not sorted by character."),
        ("C == N (3 characters, 3 patches): patch axis before token axis", (square, torch.tensor([2, 0, 1, 1])), {},
         "the result is (B, F, N, L): rows are patches (queries), columns identity tokens."),
        ("one character, one token, B=1, F=1 (keep every axis)", (two[:, :1, :1], torch.tensor([0])), {},
         "every axis stays, even of size 1."),
    ]
    out = []
    for d, args, kwargs, why in cases:
        case = run_case(d, fn, args, _region_routing_mask(*args, **kwargs), kwargs=kwargs, diagnosis=why,
                        names=("character_masks", "token_character"))
        if "dtype" in case.detail:
            case.diagnosis = ("the mask must be bool: labkit's attention (F.scaled_dot_product_attention) reads a "
                              "float mask as numbers to add to the logits, and labkit refuses it.")
        out.append(case)
    return out


# ================================================================================================ notebook 10
def _chunk_means(scores, chunk_starts):
    bounds = [int(s) for s in chunk_starts] + [scores.shape[1]]
    return torch.stack([scores[:, a:b].mean(dim=1) for a, b in zip(bounds[:-1], bounds[1:]) if b > a], dim=1)


@register("chunk_means", "10", reference=_chunk_means, hints=(
    "A chunk runs from its start up to (not including) the next chunk's start; the last chunk runs to the end "
    "of the video. Average over the frame axis only, per video.",
    "A chunk whose start equals the next start has no frames: skip it instead of averaging nothing. Gather one "
    "mean per chunk and put them side by side along a new last axis: (B, chunks), even for B=1 or one chunk.",
))
def _check_chunk_means(fn):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 19, generator=g)
    cases = [
        ("3 chunks of 7, 6 and 6 frames", (scores, [0, 7, 13]), "one mean per chunk and per video."),
        ("a single chunk", (scores, [0]), "the only chunk runs to the end: (B, 1)."),
        ("an empty chunk (two equal starts) is left out", (scores, [0, 7, 7, 13]),
         "a chunk with no frames has no mean: it is left out, not nan and not 0."),
        ("a last chunk of one frame", (scores, [0, 9, 18]), "the last chunk runs to the last frame, included."),
        ("one video, chunks of one frame (B=1)", (scores[:1, :4], [0, 1, 2, 3]),
         "B=1 is still a batch: (1, chunks)."),
        ("chunk_starts given as a tuple", (scores, (0, 10)), "chunk_starts may be a list or a tuple."),
        ("float64 scores give a float64 result", (scores.double(), [0, 5]), "keep the scores' dtype."),
    ]
    return [run_case(d, fn, a, _chunk_means(*a), diagnosis=why, names=("scores", "chunk_starts"))
            for d, a, why in cases]
