"""Checkers of the model exercises: notebooks 01, 04, 05 and 07 (see ``labkit.exercises``).

Besides values on several shapes (batches of one included), these compare gradients where the exercise is a
loss or a layer that trains, count the encoder's calls where the exercise asks for one call, feed every form
of model output the exercise names, and check that the inputs are unchanged. Small random modules are built
under a forked RNG, so the learner's random state is left alone.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from labkit.exercises import Case, CountCalls, grad_case, register, run_case


# ================================================================================================ notebook 01
def _denoise_step(x_t, model, t, scheduler, generator=None, model_kwargs=None):
    from labkit.pipeline import denoise_step

    return denoise_step(x_t, model, t, scheduler, generator=generator, model_kwargs=model_kwargs)


class _StandIn:
    """A fixed "network" that counts its calls; returns a diffusers-style object with .sample, or a tensor."""

    def __init__(self, plain=False):
        self.plain, self.calls = plain, 0

    def __call__(self, x, t, scale=1.0):
        self.calls += 1
        out = scale * torch.tanh(x) * (1 + float(t) / 1000)
        return out if self.plain else SimpleNamespace(sample=out)


@register("denoise_step", "01", reference=_denoise_step, hints=(
    "Two things happen in one step: the model predicts, the scheduler steps. The model's answer comes in one of "
    "two forms (an object holding the prediction, or the prediction itself): handle both.",
    "The scheduler's step returns several tensors; the one you want is the sample at the previous timestep, not "
    "the predicted clean sample. A DDPM step draws fresh noise: it must come from the generator you were given, "
    "and the model_kwargs must reach the model.",
))
def _check_denoise_step(fn):
    from labkit.pipeline import make_scheduler

    cases = []
    for kind, index, seed, kwargs, plain, b in [
            ("ddim", 0, 1, None, False, 2), ("ddim", -1, 2, {"scale": 0.5}, True, 2), ("ddpm", 0, 3, None, False, 1),
            ("ddpm", 5, 4, {"scale": 2.0}, False, 2), ("ddpm", -1, 5, None, True, 1), ("ddpm", 3, 6, None, True, 3)]:
        x = torch.randn(b, 3, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
        expected_sched, learner_sched = make_scheduler(kind), make_scheduler(kind)
        for s in (expected_sched, learner_sched):
            s.set_timesteps(10)
        t = expected_sched.timesteps[index]
        expected = _denoise_step(x, _StandIn(plain), t, expected_sched, torch.Generator().manual_seed(seed), kwargs)
        model = _StandIn(plain)
        form = "a plain tensor" if plain else "an object with .sample"
        why = (f"the model returns {form} here; "
               + ("a DDPM step draws noise: use the generator given. " if kind == "ddpm" else "")
               + ("model_kwargs must reach the model. " if kwargs else "")
               + "Return the sample at the previous timestep.")
        case = run_case(f"{kind.upper()} step at t={int(t)}, model returns {form}, B={b}"
                        + (f", model_kwargs {kwargs}" if kwargs else ""),
                        fn, (x, model, t, learner_sched, torch.Generator().manual_seed(seed), kwargs), expected,
                        diagnosis=why, names=("x_t", "model", "t", "scheduler", "generator", "model_kwargs"))
        if case.passed and model.calls != 1:
            case = Case(case.description, False, f"called the model {model.calls} times, expected once",
                        "one step asks the model once: keep its answer and look inside it.")
        cases.append(case)
    return cases


# ================================================================================================ notebook 04
def _bank_attention(latents, context, to_q, to_k, to_v, to_out, num_heads):
    from labkit.identity import bank_cross_attention

    return bank_cross_attention(latents, context, to_q, to_k, to_v, to_out, num_heads)


def _bank_attention_cases():
    # (B, T bank tokens, S face tokens, D, heads): one bank token, one head, several face tokens, 8 heads
    shapes = [(2, 4, 1, 16, 4), (1, 1, 1, 8, 1), (3, 6, 3, 32, 8), (2, 5, 2, 12, 3), (1, 3, 2, 8, 2)]
    with torch.random.fork_rng(devices=[]):
        for b, t, s, d, h in shapes:
            torch.manual_seed(10 * b + t)
            maps = tuple(nn.Linear(d, d, bias=False) for _ in range(4))
            # a face token larger than the bank, as after the projection: the logits are far from uniform
            latents, context = torch.randn(b, t, d), 3 * torch.randn(b, s, d)
            yield f"B={b}, T={t} bank tokens, S={s} face token(s), D={d}, {h} head(s)", (latents, context, *maps, h)


BANK = ("queries come from the bank only; keys and values from the face token(s) AND the bank; one softmax per "
        "query over all keys, scaled by the square root of the head size; heads are contiguous channel groups.")


@register("bank_attention", "04", reference=_bank_attention, hints=(
    "Who asks and who answers? The bank tokens ask (queries); the face token(s) and the bank tokens answer (keys "
    "and values). With only the face to answer, every bank token would get the same output.",
    "Per head: logits scaled by 1/sqrt(head size), softmax over the keys, weighted sum of the values; heads are "
    "split as contiguous groups of channels, merged back the same way, and the output map applied last. This is "
    "a layer that trains: keep every step inside autograd.",
))
def _check_bank_attention(fn):
    names = ("latents", "context", "to_q", "to_k", "to_v", "to_out", "num_heads")
    out = []
    for d, args in _bank_attention_cases():
        why = BANK + (" B=1 is still a batch." if args[0].shape[0] == 1 else "")
        out.append(run_case(d, fn, args, _bank_attention(*args), diagnosis=why, names=names))
    d, args = list(_bank_attention_cases())[3]
    out.append(grad_case(f"gradients w.r.t. the bank, the face tokens and the four maps ({d})", fn, _bank_attention,
                         args, wrt={0: "latents", 1: "context"},
                         modules={"to_q": args[2], "to_k": args[3], "to_v": args[4], "to_out": args[5]},
                         diagnosis="this is a layer that trains: the gradient must flow back to the bank, the face "
                                   "tokens and all four maps. Something (.detach(), no_grad, numpy) cuts the graph, "
                                   "or the computation differs."))
    return out


# ================================================================================================ notebook 05
def _temporal_identity(x, temporal_attention, identity_attention, token_masks, identity_strength):
    from labkit.attention import temporal_and_masked_identity

    return temporal_and_masked_identity(x, temporal_attention, identity_attention, token_masks, identity_strength)


def _temporal_identity_cases():
    from labkit.attention import IdentityAwareAttention, check_strength

    # (B, F, N, D, identity_strength): N != F everywhere, so a reshape that mixes frames and patches shows
    shapes = [(2, 3, 4, 16, 1.0), (1, 1, 9, 8, 0.5), (2, 5, 6, 16, [0.0, 0.8]), (3, 4, 4, 8, [1.0, 0.3, 2.0]),
              (1, 4, 3, 8, 0.7)]
    with torch.random.fork_rng(devices=[]):
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
                   f"{strength}", (x, temporal, identity, masks, s), block)


TEMPORAL = ("temporal attention runs along the frames of each patch (batch = B*N, sequence = F), as a residual, and "
            "back to (B, F, N, D) with the same grouping; then the identity branch's OUTPUT is gated by the mask "
            "and scaled by the strength, and added to the unscaled residual.")


@register("temporal_identity", "05", reference=_temporal_identity, hints=(
    "Two residual steps in a row: the temporal one first, then the identity one computed from the temporal "
    "step's result. A patch with mask 0 must get no identity update at all.",
    "Going to the temporal layout must move the patch axis next to the batch axis (a plain reshape mixes frames "
    "and patches), and coming back must undo exactly that grouping. Gate and scale the identity branch's output, "
    "not its input nor the residual. This is a layer that trains: keep everything inside autograd, out of place.",
))
def _check_temporal_identity(fn):
    names = ("x", "temporal_attention", "identity_attention", "token_masks", "identity_strength")
    out = []
    for d, args, _ in _temporal_identity_cases():
        why = TEMPORAL + (" B=1 (or F=1) is still an axis." if 1 in args[0].shape[:2] else "")
        out.append(run_case(d, fn, args, _temporal_identity(*args), diagnosis=why, names=names))
    d, args, block = list(_temporal_identity_cases())[3]
    out.append(grad_case(f"gradients w.r.t. x, the masks and the block's weights ({d})", fn, _temporal_identity,
                         args, wrt={0: "x", 3: "token_masks"}, modules={"block": block},
                         diagnosis="this is a layer that trains: the gradient must reach x, the masks and both "
                                   "attentions' weights. Something (.detach(), no_grad, an in-place change) cuts "
                                   "or alters the graph."))
    return out


# ================================================================================================ notebook 07
def _identity_loss(generated_video, reference_faces, face_encoder, temporal_weight=0.5):
    from labkit.losses import identity_preservation_loss

    return identity_preservation_loss(generated_video, reference_faces, face_encoder, temporal_weight=temporal_weight)


class _TinyRecognizer(nn.Module):
    """A fixed random stand-in for f in the loss checker: (N, 3, H, W) -> unit-norm (N, 512)."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 32, 4, stride=4)
            self.proj = nn.Linear(32 * 4 * 4, 512)
        self.requires_grad_(False)

    def forward(self, images):
        h = nn.functional.adaptive_avg_pool2d(torch.tanh(self.conv(images)), 4).flatten(1)
        return nn.functional.normalize(self.proj(h), dim=-1)


@register("identity_loss", "07", reference=_identity_loss, hints=(
    "Two terms: every frame against ONE reference embedding (the references averaged first), and each frame "
    "against the frame right after it. Each distance is the squared length of the difference summed over the "
    "embedding's dimensions, then averaged over frames (or steps) and videos.",
    "Encode all frames of all videos and all references in a single call of the encoder, then split the "
    "embeddings back per video. It is a training loss: the gradient must flow from the loss back to the video, "
    "so no no_grad, detach or .item(), and the result stays a 0-dimensional tensor; temporal_weight scales only "
    "the temporal term.",
))
def _check_identity_loss(fn):
    encoder, cases = _TinyRecognizer(), []
    why = ("the reference term compares each frame with the MEAN reference embedding, the temporal term adjacent "
           "frames only, with squared distances summed over the embedding dimensions and averaged over frames "
           "and videos; temporal_weight scales the temporal term only.")
    # (B, F, R, temporal_weight): two frames (one step), one reference, weight 0, several videos, B=1
    for b, f, r, weight in [(2, 5, 3, 0.5), (1, 2, 2, 0.5), (3, 4, 1, 1.5), (1, 6, 4, 0.0), (2, 7, 3, 2.0),
                            (1, 3, 1, 1.0)]:
        g = torch.Generator().manual_seed(10 * b + f)
        video = torch.rand(b, f, 3, 16, 16, generator=g) * 2 - 1
        refs = torch.rand(b, r, 3, 16, 16, generator=g) * 2 - 1
        expected = _identity_loss(video, refs, encoder, weight)
        counted = CountCalls(encoder)
        d = f"B={b} video(s), F={f} frames, R={r} reference(s), temporal_weight={weight}"
        case = run_case(d, fn, (video, refs, counted, weight), expected,
                        diagnosis=why + (" B=1 is still a batch of videos." if b == 1 else ""),
                        names=("generated_video", "reference_faces", "face_encoder", "temporal_weight"))
        if case.passed and counted.calls != 1:
            case = Case(d, False, f"called face_encoder {counted.calls} times, expected once",
                        "the exercise asks for ONE encoder call on all frames and references together: a loop "
                        "over frames (or separate calls) is what the vectorised loss replaces.")
        cases.append(case)
    g = torch.Generator().manual_seed(99)
    args = (torch.rand(2, 4, 3, 16, 16, generator=g) * 2 - 1, torch.rand(2, 2, 3, 16, 16, generator=g) * 2 - 1,
            encoder, 0.5)
    cases.append(grad_case("the gradient reaches the video (B=2, F=4, R=2)", fn, _identity_loss, args,
                           wrt={0: "generated_video"},
                           diagnosis="a training loss must pass its gradient back to the generated video: no "
                                     "no_grad, .detach(), .item() or numpy on the way, and the values must match."))
    return cases
