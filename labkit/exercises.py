"""Exercise checkers: the learner writes a function, ``check(name, fn)`` compares it with labkit's own.

Every notebook has exercises. A checker runs the learner's function on several inputs, edge cases
included, and compares each answer with labkit's reference implementation. It prints one PASS/FAIL line
per case and a hint on failure, and returns True when every case passes::

    from labkit.exercises import check
    check("cosine_similarity_matrix", my_cosine_similarity_matrix)

Layout of this file: the mechanism first, then one section per notebook, in notebook order. To add
checkers for a notebook, append a clearly headed section at the end and decorate each checker with
``@register(name, notebook, hint)``. A checker is a function ``checker(fn) -> list[Case]``: it calls
``fn`` itself (through :func:`run_case`) so that exceptions in the learner's code become FAIL lines.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass

import torch


# ================================================================================================ mechanism
@dataclass
class Case:
    """One checked case: a short description, whether it passed, and what was wrong if not."""

    description: str
    passed: bool
    detail: str = ""


@dataclass
class Exercise:
    """A registered exercise: its checker, the notebook it belongs to, and the hint shown on failure."""

    name: str
    notebook: str
    hint: str
    checker: Callable


_REGISTRY: dict[str, Exercise] = {}


def register(name: str, notebook: str, hint: str):
    """Decorator: register ``checker(fn) -> list[Case]`` as the checker of exercise ``name``."""

    def deco(checker):
        if name in _REGISTRY:
            raise ValueError(f"exercise {name!r} is already registered (notebook {_REGISTRY[name].notebook})")
        _REGISTRY[name] = Exercise(name, notebook, hint, checker)
        return checker

    return deco


def list_exercises(notebook: str | None = None) -> list[str]:
    """Names of the registered exercises (only those of ``notebook``, e.g. "02", if given)."""
    return [n for n, e in _REGISTRY.items() if notebook is None or e.notebook.startswith(notebook)]


def compare(got, expected, atol: float = 1e-5, rtol: float = 1e-4) -> str:
    """'' when ``got`` matches ``expected`` (tensors: shape, then values), else what differs."""
    if not torch.is_tensor(got):
        try:
            got = torch.as_tensor(got)
        except Exception:  # noqa: BLE001 - anything that is not array-like is simply wrong
            return f"expected a tensor, got {type(got).__name__}"
    expected = torch.as_tensor(expected)
    if tuple(got.shape) != tuple(expected.shape):
        return f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    got, expected = got.detach().double().cpu(), expected.detach().double().cpu()
    if not torch.allclose(got, expected, atol=atol, rtol=rtol, equal_nan=True):
        err = (got - expected).abs().max().item()
        return f"values differ from labkit's by up to {err:.3g} (tolerance {atol:g})"
    return ""


def run_case(description: str, fn: Callable, args: tuple, expected, **tol) -> Case:
    """Call the learner's ``fn(*args)`` and compare its answer with ``expected``."""
    try:
        got = fn(*args)
    except Exception as e:  # noqa: BLE001 - the learner's error is reported, not raised
        line = traceback.format_exception_only(type(e), e)[-1].strip()
        return Case(description, False, f"raised {line}")
    detail = compare(got, expected, **tol)
    return Case(description, not detail, detail)


def check(name: str, fn: Callable, verbose: bool = True) -> bool:
    """Run exercise ``name``'s checker on the learner's ``fn``; print each case PASS/FAIL; True if all pass."""
    if name not in _REGISTRY:
        raise KeyError(f"no exercise named {name!r}; known: {', '.join(sorted(_REGISTRY)) or 'none'}")
    ex = _REGISTRY[name]
    with torch.no_grad():
        cases = ex.checker(fn)
    ok = all(c.passed for c in cases)
    if verbose:
        for c in cases:
            print(f"  {'PASS' if c.passed else 'FAIL'}  {c.description}" + (f": {c.detail}" if c.detail else ""))
        passed = sum(c.passed for c in cases)
        print(f"{name}: {passed}/{len(cases)} cases passed" + ("" if ok else f"\n  hint: {ex.hint}"))
    return ok


def main(argv=None):
    """``python -m labkit.exercises`` lists the exercises, by notebook."""
    for name in list_exercises():
        print(f"{_REGISTRY[name].notebook:>4}  {name}")


# ================================================================================================ notebook 02
# 02_synthetic_faces: masks. A box (x1, y1, x2, y2) becomes a mask of the pixels whose centres lie in it.


@register("box_to_mask", "02", "pixel (row i, column j) has its centre at (j + 0.5, i + 0.5); it is inside when "
          "x1 <= j + 0.5 < x2 and y1 <= i + 0.5 < y2. x runs along columns (width), y along rows (height); "
          "return a float tensor of shape (height, width).")
def _check_box_to_mask(fn):
    from labkit.faces import box_to_mask

    cases = [
        ("a box inside a 8x10 image", ([2.0, 1.0, 6.0, 5.0], 8, 10)),
        ("a tall, thin box (x and y are not interchangeable)", ([1.0, 0.0, 3.0, 7.0], 8, 6)),
        ("fractional coordinates", ([1.4, 2.6, 4.5, 5.49], 7, 7)),
        ("a box partly outside the image", ([-3.0, 4.0, 5.0, 20.0], 9, 8)),
        ("an empty box (x2 == x1)", ([3.0, 3.0, 3.0, 6.0], 6, 6)),
        ("the whole image", ([0.0, 0.0, 5.0, 4.0], 4, 5)),
    ]
    return [run_case(d, lambda *a: torch.as_tensor(fn(*a)).float(), a, box_to_mask(*a)) for d, a in cases]


# ================================================================================================ notebook 03
# 03_face_embeddings: comparing embeddings with cosine similarity.


@register("cosine_similarity_matrix", "03", "normalise each ROW of a and of b to unit length (divide by its "
          "norm along dim=1), then take a @ b.T; the result has shape (N, M). Guard against zero vectors "
          "with a small eps (clamp the norm).")
def _check_cosine_similarity_matrix(fn):
    from labkit.faces import cosine_similarity_matrix

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 8, generator=g), torch.randn(3, 8, generator=g)
    scaled = torch.randn(4, 6, generator=g) * torch.tensor([[0.01], [1.0], [50.0], [3.0]])
    zero = torch.cat([torch.zeros(1, 4), torch.randn(2, 4, generator=g)])
    cases = [
        ("a (5, 8) against b (3, 8)", (a, b)),
        ("rows of very different lengths", (scaled, scaled)),
        ("a single row against many", (a[:1], b)),
        ("512-d embeddings, N != M", (torch.randn(7, 512, generator=g), torch.randn(2, 512, generator=g))),
        ("a zero vector (should give 0, not nan)", (zero, zero)),
    ]
    return [run_case(d, fn, args, cosine_similarity_matrix(*args), atol=1e-4) for d, args in cases]



# ================================================================================================ notebook 09
# 09_multi_character: region routing. Each character's face region may attend only to its own tokens.


@register("region_routing_mask", "09", "compare the masks with the threshold (>=) to get, for every patch n, "
          "which characters cover it: a bool (B, F, C, N); move C last -> (B, F, N, C); then index that last "
          "axis with token_character to get one column per identity token -> (B, F, N, L).")
def _check_region_routing_mask(fn):
    from labkit.identity import region_routing_mask

    g = torch.Generator().manual_seed(0)
    two = torch.rand(1, 2, 2, 16, generator=g)
    owner2 = torch.tensor([0, 0, 0, 1, 1, 1])                     # 2 tokens + a separator per character
    four = torch.rand(2, 3, 4, 9, generator=g)
    owner4 = torch.arange(4).repeat_interleave(3)
    edge = torch.tensor([[[[0.5, 0.49, 0.0, 1.0], [0.5, 0.0, 0.0, 0.7]]]])  # (1, 1, 2, 4)
    cases = [
        ("2 characters, soft masks, separators owned by their character", (two, owner2)),
        ("4 characters, B=2, F=3", (four, owner4)),
        ("a patch covered exactly at the threshold (>=), a patch in no face, two faces overlapping",
         (edge, torch.tensor([0, 1]))),
        ("tokens listed out of character order", (two, torch.tensor([1, 0, 1, 0]))),
    ]
    out = [run_case(d, lambda m, o: fn(m, o).float(), a, region_routing_mask(*a).float()) for d, a in cases]
    out.append(run_case("threshold=0.3 passed explicitly", lambda m, o: fn(m, o, threshold=0.3).float(),
                        (four, owner4), region_routing_mask(four, owner4, threshold=0.3).float()))
    return out


# ================================================================================================ notebook 10
# 10_drift_lab: drift is read chunk by chunk.


@register("chunk_means", "10", "bounds = chunk_starts + [F]; for each consecutive pair (a, b) with b > a take "
          "scores[:, a:b].mean(dim=1); stack the means along dim=1 -> (B, number of non-empty chunks).")
def _check_chunk_means(fn):
    from labkit.widgets import chunk_means

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 19, generator=g)
    cases = [
        ("3 chunks of 7, 6 and 6 frames", (scores, [0, 7, 13])),
        ("a single chunk", (scores, [0])),
        ("an empty chunk (two equal starts) is left out", (scores, [0, 7, 7, 13])),
        ("one video, chunks of one frame", (scores[:1, :4], [0, 1, 2, 3])),
        ("chunk_starts given as a tuple", (scores, (0, 10))),
    ]
    return [run_case(d, fn, a, chunk_means(*a)) for d, a in cases]


# ============================================================================================ command line
# ``python -m labkit.exercises [solutions.py] [--notebook NN]``: the exercises by notebook, and the checks of
# a learner's solutions file. It reads the registry of a normal import of this module, so every section
# counts wherever in the file it was appended (and whatever ran before the ``__main__`` guard).


def _notebook_titles() -> dict:
    try:
        from labkit.run_notebooks import notebook_paths

        return {p.name[:2]: p.stem for p in notebook_paths()}
    except Exception:  # noqa: BLE001 - titles are decoration only
        return {}


def _by_notebook(registry, notebook: str | None = None) -> list[str]:
    """Exercise names grouped by notebook, in notebook order (sections are appended in any order)."""
    names = registry.list_exercises(notebook)
    return sorted(names, key=lambda name: registry._REGISTRY[name].notebook)


def run_solutions(path, notebook: str | None = None) -> dict:
    """Check every exercise that the file ``path`` defines a function for (named ``name`` or ``my_name``).

    Returns {exercise name: True (all cases pass) / False (some fail) / None (not attempted)}.
    """
    import importlib
    import importlib.util
    from pathlib import Path

    registry = importlib.import_module("labkit.exercises")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no solutions file at {path}")
    spec = importlib.util.spec_from_file_location("learner_solutions", path)
    solutions = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(solutions)
    results = {}
    for name in _by_notebook(registry, notebook):
        fn = getattr(solutions, name, None) or getattr(solutions, f"my_{name}", None)
        if fn is None:
            results[name] = None
            continue
        print(f"--- {registry._REGISTRY[name].notebook} {name}")
        results[name] = registry.check(name, fn)
    return results


def main(argv=None):  # noqa: F811 - the full command line replaces the listing-only version above
    """``python -m labkit.exercises`` lists every exercise by notebook; with a solutions file, checks it."""
    import argparse
    import importlib

    parser = argparse.ArgumentParser(
        prog="python -m labkit.exercises",
        description="List the course's exercises, or check a solutions file: a .py file that defines functions "
                    "named after the exercises (or my_<name>, as in the notebooks).")
    parser.add_argument("solutions", nargs="?", help="a .py file with your solutions")
    parser.add_argument("--notebook", help="only this notebook's exercises, e.g. 09")
    args = parser.parse_args(argv)
    registry = importlib.import_module("labkit.exercises")
    titles = _notebook_titles()
    if args.solutions is None:
        last = None
        for name in _by_notebook(registry, args.notebook):
            nb = registry._REGISTRY[name].notebook
            if nb != last:
                print(titles.get(nb[:2], nb))
                last = nb
            print(f"    {name}")
        print("check your own solutions with:  python -m labkit.exercises my_solutions.py")
        return 0
    try:
        results = registry.run_solutions(args.solutions, args.notebook)
    except (FileNotFoundError, SyntaxError) as err:  # one clear line, not a traceback
        import sys

        why = (str(err) if isinstance(err, FileNotFoundError)
               else f"{args.solutions} does not parse: {err.msg} (line {err.lineno})")
        print(f"error: {why}", file=sys.stderr)
        return 2
    print("\nsummary")
    for name, ok in results.items():
        nb = registry._REGISTRY[name].notebook
        status = "not attempted" if ok is None else ("PASS" if ok else "FAIL")
        print(f"  {titles.get(nb[:2], nb):<28} {name:<28} {status}")
    attempted = [ok for ok in results.values() if ok is not None]
    print(f"{sum(attempted)}/{len(attempted)} attempted exercises pass; {len(results) - len(attempted)} not attempted")
    return 0 if all(attempted) else 1


if __name__ == "__main__":
    raise SystemExit(main())


# ======================================================================================= notebooks 04, 05, 07
# 04_identity_encoder: the bank cross-attention of the Perceiver resampler (exercise "bank_attention").
# 05_identity_attention: the temporal rearrange and the masked identity branch ("temporal_identity").
# 07_identity_losses: the identity-preservation loss, vectorised ("identity_loss").
# The checkers build small random modules under a forked RNG (the learner's random state is left alone) and
# compare the learner's output with labkit's own on several shapes, edge cases included.


def _bank_attention_cases():
    from torch import nn

    # (B, T bank tokens, S face tokens, D, heads): one bank token, one head, several face tokens, 8 heads
    shapes = [(2, 4, 1, 16, 4), (1, 1, 1, 8, 1), (3, 6, 3, 32, 8), (2, 5, 2, 12, 3)]
    with torch.random.fork_rng():
        for b, t, s, d, h in shapes:
            torch.manual_seed(10 * b + t)
            maps = tuple(nn.Linear(d, d, bias=False) for _ in range(4))
            # a face token larger than the bank, as after the projection: the logits are far from uniform
            latents, context = torch.randn(b, t, d), 3 * torch.randn(b, s, d)
            yield f"B={b}, T={t} bank tokens, S={s} face token(s), D={d}, {h} head(s)", (latents, context, *maps, h)


@register("bank_attention", "04", "queries come from the latents (the bank) only; keys and values from "
          "torch.cat([context, latents], dim=1). Split heads with 'b l (h c) -> b h l c', scale the logits by "
          "1/sqrt(c), softmax over the keys (last axis), merge the heads back with 'b h l c -> b l (h c)', then "
          "apply to_out.")
def _check_bank_attention(fn):
    from labkit.identity import bank_cross_attention

    return [run_case(d, fn, args, bank_cross_attention(*args)) for d, args in _bank_attention_cases()]


def _temporal_identity_cases():
    from labkit.attention import IdentityAwareAttention, check_strength

    # (B, F, N, D, identity_strength): N != F everywhere, so a reshape that mixes frames and patches shows
    shapes = [(2, 3, 4, 16, 1.0), (1, 1, 9, 8, 0.5), (2, 5, 6, 16, [0.0, 0.8]), (3, 4, 4, 8, [1.0, 0.3, 2.0])]
    with torch.random.fork_rng():
        for b, f, n, d, strength in shapes:
            torch.manual_seed(7 * b + f)
            block = IdentityAwareAttention(d, num_heads=2)
            tokens = torch.randn(b, 3, d)

            def temporal(h, block=block):
                return block.temporal_attn(block.norm_temporal(h))

            def identity(x, block=block, tokens=tokens):
                return block.identity_attn(block.norm_identity(x).flatten(1, 2), tokens)[0].reshape(x.shape)

            x = torch.randn(b, f, n, d)
            masks = (torch.rand(b, f, n) > 0.5).float() * torch.rand(b, f, n)  # soft, with exact zeros
            s = check_strength(torch.tensor(strength) if isinstance(strength, list) else strength, b, "cpu")
            yield (f"B={b}, F={f} frame(s), N={n} tokens, D={d}, soft masks with zeros, identity_strength "
                   f"{strength}", (x, temporal, identity, masks, s))


@register("temporal_identity", "05", "rearrange(x, 'b f n d -> (b n) f d') (a reshape mixes frames and patches), "
          "add temporal_attention(h) as a residual, go back with rearrange(h, '(b n) f d -> b f n d', b=b), then "
          "x + identity_strength * token_masks[..., None] * identity_attention(x): gate the OUTPUT of the "
          "identity branch, not its queries, and leave the residual x unscaled.")
def _check_temporal_identity(fn):
    from labkit.attention import temporal_and_masked_identity

    return [run_case(d, fn, args, temporal_and_masked_identity(*args)) for d, args in _temporal_identity_cases()]


class _TinyRecognizer(torch.nn.Module):
    """A fixed random stand-in for f in the loss checker: (N, 3, H, W) -> unit-norm (N, 512)."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 32, 4, stride=4)
            self.proj = torch.nn.Linear(32 * 4 * 4, 512)
        self.requires_grad_(False)

    def forward(self, images):
        h = torch.nn.functional.adaptive_avg_pool2d(torch.tanh(self.conv(images)), 4).flatten(1)
        return torch.nn.functional.normalize(self.proj(h), dim=-1)


@register("identity_loss", "07", "call face_encoder ONCE on all frames and references; compare every frame with "
          "the MEAN of the reference embeddings (average the references first); the temporal term compares "
          "frames t and t+1 only; sum the squares over the 512 dimensions (F.mse_loss would divide by 512) and "
          "average over frames and videos; return reference + temporal_weight * temporal.")
def _check_identity_loss(fn):
    from labkit.losses import identity_preservation_loss

    encoder, cases = _TinyRecognizer(), []
    # (B, F, R, temporal_weight): two frames (one step), one reference, weight 0, several videos
    for b, f, r, weight in [(2, 5, 3, 0.5), (1, 2, 2, 0.5), (3, 4, 1, 1.5), (1, 6, 4, 0.0), (2, 7, 3, 2.0)]:
        g = torch.Generator().manual_seed(10 * b + f)
        video = torch.rand(b, f, 3, 16, 16, generator=g) * 2 - 1
        refs = torch.rand(b, r, 3, 16, 16, generator=g) * 2 - 1
        expected = identity_preservation_loss(video, refs, encoder, temporal_weight=weight)
        cases.append(run_case(f"B={b} video(s), F={f} frames, R={r} reference(s), temporal_weight={weight}", fn,
                              (video, refs, encoder, weight), expected))
    return cases


# =================================================================================== notebooks 01, 06, 08
# 01_drift: one reverse-diffusion step with a diffusers scheduler ("denoise_step").
# 06_reference_conditioning: averaging several references into one unit-norm identity ("mean_reference_embedding").
# 08_training: the v-prediction target that IdentityVideoDiT regresses ("v_target").


def _stand_in_model(x, t, scale=1.0):
    """A fixed "network" for the denoise_step checker: returns a diffusers-style output object."""
    from types import SimpleNamespace

    return SimpleNamespace(sample=scale * torch.tanh(x) * (1 + float(t) / 1000))


@register("denoise_step", "01", "call model(x_t, t, **model_kwargs); take .sample when the output has it; then "
          "scheduler.step(prediction, t, x_t, generator=generator).prev_sample. Pass the generator (a DDPM "
          "step draws noise with it) and return prev_sample, not pred_original_sample.")
def _check_denoise_step(fn):
    from labkit.pipeline import denoise_step, make_scheduler

    cases = []
    for kind, index, seed, kwargs in [("ddim", 0, 1, None), ("ddim", -1, 2, {"scale": 0.5}), ("ddpm", 0, 3, None),
                                      ("ddpm", 5, 4, {"scale": 2.0}), ("ddpm", -1, 5, None)]:
        x = torch.randn(2, 3, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
        expected_sched, learner_sched = make_scheduler(kind), make_scheduler(kind)
        for s in (expected_sched, learner_sched):
            s.set_timesteps(10)
        t = expected_sched.timesteps[index]
        expected = denoise_step(x, _stand_in_model, t, expected_sched, generator=torch.Generator().manual_seed(seed),
                                model_kwargs=kwargs)
        cases.append(run_case(f"{kind.upper()} step at t={int(t)}" + (f", model_kwargs {kwargs}" if kwargs else ""),
                              fn, (x, _stand_in_model, t, learner_sched, torch.Generator().manual_seed(seed), kwargs),
                              expected))
    return cases


@register("mean_reference_embedding", "06", "average over the reference axis (dim=-2, the R axis), THEN divide "
          "by the norm of the mean along the last axis; (R, D) -> (D,), (B, R, D) -> (B, D). Normalising before "
          "averaging, or not re-normalising, gives vectors shorter than 1.")
def _check_mean_reference_embedding(fn):
    from labkit.metrics import reference_embedding

    cases = []
    for shape, seed in [((3, 512), 0), ((1, 512), 1), ((4, 5, 512), 2), ((2, 1, 16), 3), ((3, 2, 8), 4)]:
        e = torch.nn.functional.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)
        e = e + 0.3  # references of one face agree: their mean is far from zero but shorter than 1
        e = torch.nn.functional.normalize(e, dim=-1)
        expected = reference_embedding(e if e.ndim == 3 else e[None])
        expected = expected if e.ndim == 3 else expected[0]
        cases.append(run_case(f"embeddings {tuple(shape)} (unit-norm)", fn, (e.clone(),), expected))
    return cases


@register("v_target", "08", "v = sqrt(alpha_bar_t) * noise - sqrt(1 - alpha_bar_t) * x0 with alpha_bar_t = "
          "alphas_cumprod[t], one value per sample, reshaped to (B, 1, 1, ...) so it broadcasts over every other "
          "axis. It equals diffusers' DDPMScheduler.get_velocity(x0, noise, t).")
def _check_v_target(fn):
    from labkit.pipeline import make_scheduler

    scheduler = make_scheduler("ddpm")
    ab = scheduler.alphas_cumprod
    cases = []
    for shape, steps in [((2, 8, 3, 4, 4), [10, 900]), ((1, 3, 4, 4), [0]), ((3, 2, 3, 2, 2), [999, 500, 1]),
                         ((4, 5), [250, 250, 700, 3])]:
        g = torch.Generator().manual_seed(len(shape) + steps[0])
        x0, noise = torch.rand(*shape, generator=g) * 2 - 1, torch.randn(*shape, generator=g)
        t = torch.tensor(steps)
        expected = scheduler.get_velocity(x0, noise, t)
        cases.append(run_case(f"x0 {tuple(shape)}, t={steps}", fn, (x0, noise, ab.clone(), t), expected))
    return cases
