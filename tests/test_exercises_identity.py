"""The checkers of notebooks 04, 05 and 07 accept labkit's own pieces and reject plausible mistakes.

Each wrong version below is one a learner could write: it has the right shapes and often the right values on
easy inputs, so only a checker that compares values on several inputs (edge cases included) catches it.
"""

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from labkit.attention import temporal_and_masked_identity
from labkit.exercises import check, list_exercises
from labkit.identity import bank_cross_attention, degenerate_bank_attention
from labkit.losses import identity_preservation_loss


def test_the_three_exercises_are_registered_for_their_notebooks():
    assert "bank_attention" in list_exercises("04")
    assert "temporal_identity" in list_exercises("05")
    assert "identity_loss" in list_exercises("07")


def test_checking_leaves_the_learners_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check("bank_attention", bank_cross_attention, verbose=False)
    check("temporal_identity", temporal_and_masked_identity, verbose=False)
    torch.testing.assert_close(torch.rand(3), expected)


def test_failures_print_the_failing_case_and_the_hint(capsys):
    assert not check("identity_loss", lambda *a: torch.zeros(()), verbose=True)
    out = capsys.readouterr().out
    assert "FAIL" in out and "hint:" in out and "MEAN of the reference embeddings" in out


# ------------------------------------------------------------------------------------------ 04 bank attention
def _heads(t, num_heads, pattern="b l (h c) -> b h l c"):
    return rearrange(t, pattern, h=num_heads)


def _bank_by_hand(latents, context, to_q, to_k, to_v, to_out, num_heads):
    """A correct learner's version: explicit softmax, keys in the other order (order does not matter)."""
    kv = torch.cat([latents, context], dim=1)
    q, k, v = (_heads(t, num_heads) for t in (to_q(latents), to_k(kv), to_v(kv)))
    w = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(dim=-1)
    return to_out(rearrange(w @ v, "b h l c -> b l (h c)"))


def _bank_keys_from_face_only(*args):
    """The article's sketch: keys and values are the face token(s) only."""
    return degenerate_bank_attention(*args)[0]


def _bank_without_softmax_scale(latents, context, to_q, to_k, to_v, to_out, num_heads):
    kv = torch.cat([context, latents], dim=1)
    q, k, v = (_heads(t, num_heads) for t in (to_q(latents), to_k(kv), to_v(kv)))
    return to_out(rearrange((q @ k.transpose(-1, -2)).softmax(dim=-1) @ v, "b h l c -> b l (h c)"))


def _bank_heads_split_wrongly(latents, context, to_q, to_k, to_v, to_out, num_heads):
    """Splits the channels as (c h): each head gets interleaved channels."""
    kv = torch.cat([context, latents], dim=1)
    q, k, v = (_heads(t, num_heads, "b l (c h) -> b h l c") for t in (to_q(latents), to_k(kv), to_v(kv)))
    return to_out(rearrange(F.scaled_dot_product_attention(q, k, v), "b h l c -> b l (c h)"))


def _bank_softmax_over_queries(latents, context, to_q, to_k, to_v, to_out, num_heads):
    kv = torch.cat([context, latents], dim=1)
    q, k, v = (_heads(t, num_heads) for t in (to_q(latents), to_k(kv), to_v(kv)))
    w = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(dim=-2)
    return to_out(rearrange(w @ v, "b h l c -> b l (h c)"))


def _bank_without_to_out(latents, context, to_q, to_k, to_v, to_out, num_heads):
    kv = torch.cat([context, latents], dim=1)
    q, k, v = (_heads(t, num_heads) for t in (to_q(latents), to_k(kv), to_v(kv)))
    return rearrange(F.scaled_dot_product_attention(q, k, v), "b h l c -> b l (h c)")


def test_bank_attention_checker_accepts_labkit_and_a_correct_variant():
    assert check("bank_attention", bank_cross_attention, verbose=False)
    assert check("bank_attention", _bank_by_hand, verbose=False)


@pytest.mark.parametrize("wrong", [_bank_keys_from_face_only, _bank_without_softmax_scale, _bank_heads_split_wrongly,
                                   _bank_softmax_over_queries, _bank_without_to_out], ids=lambda f: f.__name__)
def test_bank_attention_checker_rejects_plausible_mistakes(wrong):
    assert not check("bank_attention", wrong, verbose=False)


# ------------------------------------------------------------------------ 05 temporal + masked identity branch
def _temporal(x, temporal_attention, pattern_in="b f n d -> (b n) f d", pattern_out="(b n) f d -> b f n d"):
    h = rearrange(x, pattern_in)
    return rearrange(h + temporal_attention(h), pattern_out, b=x.shape[0])


def _temporal_by_hand(x, temporal_attention, identity_attention, token_masks, identity_strength):
    """A correct learner's version with permute/reshape instead of einops."""
    b, f, n, d = x.shape
    h = x.permute(0, 2, 1, 3).reshape(b * n, f, d)
    x = (h + temporal_attention(h)).reshape(b, n, f, d).permute(0, 2, 1, 3)
    return x + identity_strength * token_masks.unsqueeze(-1) * identity_attention(x)


def _reshape_mixes_frames_and_patches(x, temporal_attention, identity_attention, token_masks, identity_strength):
    b, f, n, d = x.shape
    h = x.reshape(b * n, f, d)
    x = (h + temporal_attention(h)).reshape(b, f, n, d)
    return x + identity_strength * token_masks[..., None] * identity_attention(x)


def _masks_on_queries(x, temporal_attention, identity_attention, token_masks, identity_strength):
    x = _temporal(x, temporal_attention)
    return x + identity_strength * identity_attention(x * token_masks[..., None])


def _wrong_way_back(x, temporal_attention, identity_attention, token_masks, identity_strength):
    x = _temporal(x, temporal_attention, pattern_out="(n b) f d -> b f n d")
    return x + identity_strength * token_masks[..., None] * identity_attention(x)


def _strength_on_everything(x, temporal_attention, identity_attention, token_masks, identity_strength):
    x = _temporal(x, temporal_attention)
    return identity_strength * (x + token_masks[..., None] * identity_attention(x))


def _no_temporal_residual(x, temporal_attention, identity_attention, token_masks, identity_strength):
    h = rearrange(x, "b f n d -> (b n) f d")
    x = rearrange(temporal_attention(h), "(b n) f d -> b f n d", b=x.shape[0])
    return x + identity_strength * token_masks[..., None] * identity_attention(x)


def _identity_before_temporal(x, temporal_attention, identity_attention, token_masks, identity_strength):
    """Computes the identity branch from the input instead of from the temporal output."""
    return _temporal(x, temporal_attention) + identity_strength * token_masks[..., None] * identity_attention(x)


def test_temporal_identity_checker_accepts_labkit_and_a_correct_variant():
    assert check("temporal_identity", temporal_and_masked_identity, verbose=False)
    assert check("temporal_identity", _temporal_by_hand, verbose=False)


@pytest.mark.parametrize("wrong", [_reshape_mixes_frames_and_patches, _masks_on_queries, _wrong_way_back,
                                   _strength_on_everything, _no_temporal_residual, _identity_before_temporal],
                         ids=lambda f: f.__name__)
def test_temporal_identity_checker_rejects_plausible_mistakes(wrong):
    assert not check("temporal_identity", wrong, verbose=False)


# ---------------------------------------------------------------------------------- 07 identity-preservation loss
def _loss(video, refs, encoder, weight, temporal="adjacent", average=True, per_dim=False):
    """A vectorised loss with one switch per plausible mistake; the defaults are the correct loss."""
    b, f = video.shape[:2]
    e = encoder(torch.cat([video.flatten(0, 1), refs.flatten(0, 1)]))
    frames, ref = e[: b * f].reshape(b, f, -1), e[b * f:].reshape(b, refs.shape[1], -1)
    if average:
        reference = (frames - ref.mean(1, keepdim=True)).square().sum(-1).mean()
    else:  # the mean distance to each reference, not the distance to the mean reference
        reference = (frames[:, :, None] - ref[:, None]).square().sum(-1).mean()
    if temporal == "adjacent":
        steps = frames[:, 1:] - frames[:, :-1]
    elif temporal == "every other":
        steps = frames[:, 2:] - frames[:, :-2] if f > 2 else frames[:, 1:] - frames[:, :-1]
    else:  # every frame against the first one
        steps = frames[:, 1:] - frames[:, :1]
    temporal_term = steps.square().sum(-1).mean()
    if per_dim:  # F.mse_loss divides by the 512 dimensions
        reference, temporal_term = reference / e.shape[-1], temporal_term / e.shape[-1]
    return reference + weight * temporal_term


def _loss_first_video_only(video, refs, encoder, weight):
    return _loss(video[:1], refs[:1], encoder, weight)


def _loss_weight_on_reference(video, refs, encoder, weight):
    reference = _loss(video, refs, encoder, 0.0)
    temporal = _loss(video, refs, encoder, 1.0) - reference
    return weight * reference + temporal


LOSS_MISTAKES = {
    "temporal term over non-adjacent frames": lambda *a: _loss(*a, temporal="every other"),
    "temporal term against the first frame": lambda *a: _loss(*a, temporal="first"),
    "references not averaged": lambda *a: _loss(*a, average=False),
    "F.mse_loss instead of the summed squared distance": lambda *a: _loss(*a, per_dim=True),
    "only the first video of the batch": _loss_first_video_only,
    "temporal_weight on the wrong term": _loss_weight_on_reference,
}


def test_identity_loss_checker_accepts_labkit_and_a_correct_variant():
    assert check("identity_loss", identity_preservation_loss, verbose=False)
    assert check("identity_loss", _loss, verbose=False)


@pytest.mark.parametrize("name", LOSS_MISTAKES)
def test_identity_loss_checker_rejects_plausible_mistakes(name):
    assert not check("identity_loss", LOSS_MISTAKES[name], verbose=False)
