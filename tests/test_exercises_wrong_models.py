"""The checkers of notebooks 01, 04, 05 and 07 pass labkit's own pieces and reject plausible mistakes.

Each wrong version is one a learner could write: right shapes, often right values on easy inputs. Some are
right in value and wrong only in what the exercise also asks: a loss whose gradient never reaches the video,
a loss that calls the encoder once per frame, a layer that cuts the graph, a model output handled in only one
of its two forms, an input changed in place. The test names the failure the checker must report for those.
"""

import pytest
import torch
from einops import rearrange

from labkit import solutions
from labkit.exercises import check, reference
from labkit.identity import degenerate_bank_attention
from labkit.pipeline import denoise_step

NAMES = ["denoise_step", "bank_attention", "temporal_identity", "identity_loss"]


# ----------------------------------------------------------------------------------------- 01 denoise step
def _step(x_t, model, t, scheduler, generator=None, model_kwargs=None, field="prev_sample", form="both",
          calls=1, kwargs=True):
    for _ in range(calls - 1):
        model(x_t, t, **(model_kwargs or {}))
    out = model(x_t, t, **((model_kwargs or {}) if kwargs else {}))
    prediction = {"both": out.sample if hasattr(out, "sample") else out,
                  "sample": getattr(out, "sample", None), "plain": out}[form]
    return getattr(scheduler.step(prediction, t, x_t, generator=generator), field)


def _step_in_place(x_t, model, t, scheduler, generator=None, model_kwargs=None):
    new = _step(x_t, model, t, scheduler, generator, model_kwargs)
    x_t.copy_(new)
    return x_t


def _step_own_generator(x_t, model, t, scheduler, generator=None, model_kwargs=None):
    return _step(x_t, model, t, scheduler, torch.Generator().manual_seed(0), model_kwargs)


DENOISE_WRONG = [
    ("no generator", lambda x, m, t, s, generator=None, model_kwargs=None: _step(x, m, t, s, None, model_kwargs), None),
    ("pred_original_sample", lambda *a: _step(*a, field="pred_original_sample"), None),
    ("model_kwargs dropped", lambda *a: _step(*a, kwargs=False), None),
    ("Euler step by hand", lambda x, m, t, s, g=None, k=None: x - 0.1 * m(x, t, **(k or {})).sample, None),
    ("only the .sample form", lambda *a: _step(*a, form="sample"), None),
    ("only the plain-tensor form", lambda *a: _step(*a, form="plain"), None),
    ("the model called twice", lambda *a: _step(*a, calls=2), "called the model 2 times"),
    ("x_t overwritten in place", _step_in_place, "in place"),
    ("a generator of its own", _step_own_generator, None),
    ("the scheduler's output object", lambda x, m, t, s, g=None, k=None: s.step(
        getattr(m(x, t, **(k or {})), "sample", None), t, x, generator=g), "expected a torch tensor"),
]


# ------------------------------------------------------------------------------------------ 04 bank attention
def _bank(latents, context, to_q, to_k, to_v, to_out, num_heads, kv_order="context first", pattern="b l (h c)",
          scale=True, softmax_dim=-1, out=True, detach=False, keys="both"):
    kv = {"both": torch.cat([context, latents] if kv_order == "context first" else [latents, context], dim=1),
          "latents": latents, "context": context}[keys]
    q, k, v = to_q(latents), to_k(kv), to_v(kv)
    q, k, v = (rearrange(t, f"{pattern} -> b h l c", h=num_heads) for t in (q, k, v))
    w = (q @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5 if scale else 1)).softmax(dim=softmax_dim)
    w = w.detach() if detach else w
    merged = rearrange(w @ v, f"b h l c -> {pattern}")
    return to_out(merged) if out else merged


def _bank_in_place(latents, context, *maps_and_heads):
    result = _bank(latents, context, *maps_and_heads)
    latents += result  # a residual written into the caller's bank
    return result


def _bank_one_head(latents, context, to_q, to_k, to_v, to_out, num_heads):
    return _bank(latents, context, to_q, to_k, to_v, to_out, 1)


BANK_WRONG = [
    ("keys and values from the face only", lambda *a: degenerate_bank_attention(*a)[0], None),
    ("self-attention of the bank only", lambda *a: _bank(*a, keys="latents"), None),
    ("no 1/sqrt(c) scale", lambda *a: _bank(*a, scale=False), None),
    ("heads split as (c h)", lambda *a: _bank(*a, pattern="b l (c h)"), None),
    ("softmax over the queries", lambda *a: _bank(*a, softmax_dim=-2), None),
    ("to_out left out", lambda *a: _bank(*a, out=False), None),
    ("one head whatever num_heads", _bank_one_head, None),
    ("attention weights detached", lambda *a: _bank(*a, detach=True), "gradient w.r.t."),
    ("a residual written into the bank in place", _bank_in_place, "in place"),
    ("B=1 squeezed away", lambda *a: _bank(*a).squeeze(0), "shape"),
]


# ------------------------------------------------------------------------ 05 temporal + masked identity branch
def _block(x, temporal_attention, identity_attention, token_masks, identity_strength, back="(b n) f d",
           go="(b n) f d", gate="output", residual=True, identity_from="temporal", detach=False):
    b = x.shape[0]
    h = rearrange(x, f"b f n d -> {go}")
    h = h + temporal_attention(h) if residual else temporal_attention(h)
    y = rearrange(h, f"{back} -> b f n d", b=b)
    source = y if identity_from == "temporal" else x
    m = token_masks[..., None]
    if gate == "output":
        branch = identity_strength * m * identity_attention(source)
    elif gate == "queries":
        branch = identity_strength * identity_attention(source * m)
    elif gate == "none":
        branch = identity_strength * identity_attention(source)
    else:  # strength on everything
        return identity_strength * (y + m * identity_attention(source))
    return y + (branch.detach() if detach else branch)


def _reshape_mixes(x, temporal_attention, identity_attention, token_masks, identity_strength):
    b, f, n, d = x.shape
    h = x.reshape(b * n, f, d)
    y = (h + temporal_attention(h)).reshape(b, f, n, d)
    return y + identity_strength * token_masks[..., None] * identity_attention(y)


def _temporal_in_place(x, temporal_attention, identity_attention, token_masks, identity_strength):
    token_masks.clamp_(0, 1).mul_(identity_strength.reshape(-1, 1, 1))
    return _block(x, temporal_attention, identity_attention, token_masks, torch.ones_like(identity_strength))


TEMPORAL_WRONG = [
    ("a reshape mixes frames and patches", _reshape_mixes, None),
    ("mask on the queries", lambda *a: _block(*a, gate="queries"), None),
    ("wrong way back: (n b) f d", lambda *a: _block(*a, back="(n b) f d"), None),
    ("strength on everything", lambda *a: _block(*a, gate="all"), None),
    ("no temporal residual", lambda *a: _block(*a, residual=False), None),
    ("identity branch from the input", lambda *a: _block(*a, identity_from="input"), None),
    ("no mask at all", lambda *a: _block(*a, gate="none"), None),
    ("identity branch detached", lambda *a: _block(*a, detach=True), "gradient w.r.t."),
    ("strength folded into the masks in place", _temporal_in_place, "in place"),
    ("B=1 squeezed away", lambda *a: _block(*a).squeeze(0), "shape"),
]


# ---------------------------------------------------------------------------------- 07 identity-preservation loss
def _loss(video, refs, encoder, weight=0.5, temporal="adjacent", average=True, per_dim=False, grad=True,
          calls="once"):
    b, f = video.shape[:2]
    if calls == "once":
        e = encoder(torch.cat([video.flatten(0, 1), refs.flatten(0, 1)]))
        frames, ref = e[: b * f].reshape(b, f, -1), e[b * f:].reshape(b, refs.shape[1], -1)
    elif calls == "twice":
        frames, ref = encoder(video.flatten(0, 1)).reshape(b, f, -1), encoder(refs.flatten(0, 1)).reshape(b, -1, 512)
    else:  # the article's loop: one call per frame
        frames = torch.stack([torch.stack([encoder(video[i, j][None])[0] for j in range(f)]) for i in range(b)])
        ref = encoder(refs.flatten(0, 1)).reshape(b, -1, 512)
    if not grad:
        frames, ref = frames.detach(), ref.detach()
    if average:
        reference = (frames - ref.mean(1, keepdim=True)).square().sum(-1).mean()
    else:  # the mean distance to each reference, not the distance to the mean reference
        reference = (frames[:, :, None] - ref[:, None]).square().sum(-1).mean()
    steps = {"adjacent": lambda: frames[:, 1:] - frames[:, :-1], "first": lambda: frames[:, 1:] - frames[:, :1],
             "every other": lambda: frames[:, 2:] - frames[:, :-2] if f > 2 else frames[:, 1:] - frames[:, :-1]}
    temporal_term = steps[temporal]().square().sum(-1).mean()
    if per_dim:  # F.mse_loss divides by the 512 dimensions
        reference, temporal_term = reference / e.shape[-1], temporal_term / e.shape[-1]
    return reference + weight * temporal_term


def _loss_no_grad(video, refs, encoder, weight=0.5):
    with torch.no_grad():
        e = encoder(torch.cat([video.flatten(0, 1), refs.flatten(0, 1)]))
    b, f = video.shape[:2]
    frames, ref = e[: b * f].reshape(b, f, -1), e[b * f:].reshape(b, refs.shape[1], -1)
    reference = (frames - ref.mean(1, keepdim=True)).square().sum(-1).mean()
    return reference + weight * (frames[:, 1:] - frames[:, :-1]).square().sum(-1).mean()


def _loss_in_place(video, refs, encoder, weight=0.5):
    video.clamp_(-0.9, 0.9)
    return _loss(video, refs, encoder, weight)


LOSS_WRONG = [
    ("temporal term over non-adjacent frames", lambda *a: _loss(*a, temporal="every other"), None),
    ("temporal term against the first frame", lambda *a: _loss(*a, temporal="first"), None),
    ("references not averaged", lambda *a: _loss(*a, average=False), None),
    ("F.mse_loss instead of the summed squared distance", lambda *a: _loss(*a, per_dim=True), None),
    ("only the first video of the batch", lambda v, r, e, w: _loss(v[:1], r[:1], e, w), None),
    ("temporal_weight on the wrong term", lambda v, r, e, w: w * _loss(v, r, e, 0.0) + (_loss(v, r, e, 1.0)
                                                                                       - _loss(v, r, e, 0.0)), None),
    ("the encoder under no_grad: no gradient reaches the video", _loss_no_grad, "no gradient reaches generated_video"),
    ("embeddings detached", lambda *a: _loss(*a, grad=False), "no gradient reaches generated_video"),
    ("a loop over frames, one encoder call each", lambda *a: _loss(*a, calls="loop"), "called face_encoder"),
    ("frames and references encoded in two calls", lambda *a: _loss(*a, calls="twice"), "called face_encoder 2 times"),
    ("a Python float (.item())", lambda *a: _loss(*a).item(), "expected a torch tensor"),
    ("clamps the video in place", _loss_in_place, "in place"),
    ("a (1,) tensor instead of a scalar", lambda *a: _loss(*a).reshape(1), "shape"),
]

WRONG = {"denoise_step": DENOISE_WRONG, "bank_attention": BANK_WRONG, "temporal_identity": TEMPORAL_WRONG,
         "identity_loss": LOSS_WRONG}
CORRECT = {
    "denoise_step": [denoise_step, _step, solutions.my_denoise_step],
    "bank_attention": [lambda *a: _bank(*a, kv_order="latents first"), solutions.my_bank_attention],
    "temporal_identity": [_block, solutions.my_temporal_identity],
    "identity_loss": [_loss, solutions.my_identity_loss],
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
    if expect:
        details = " | ".join(c.detail for c in result.cases if not c.passed)
        assert expect in details, f"'{label}' should fail with '{expect}', got: {details}"


def test_every_checker_here_rejects_at_least_eight_wrong_solutions():
    for name in NAMES:
        assert len(WRONG[name]) >= 8, name


def test_checking_leaves_the_learners_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for name in NAMES:
        check(name, reference(name), verbose=False)
    torch.testing.assert_close(torch.rand(3), expected)


def test_the_gradient_cases_fail_with_a_diagnosis_that_names_the_cut(capsys):
    from labkit.exercises import hint

    check("identity_loss", _loss_no_grad)
    assert "FAIL  the gradient reaches the video" in capsys.readouterr().out
    text = hint("identity_loss")
    assert "no_grad" in text and "torch.no_grad()" not in text, "diagnose, do not give the code"
