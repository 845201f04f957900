"""The identity processor carries IP-Adapter-style identity cross-attention into a diffusers video UNet."""

import logging

import pytest
import torch
from diffusers import UNet3DConditionModel

from labkit.processors import IdentityAttnProcessor, IdentityPassThroughProcessor, install_identity_processors


def tiny_unet():
    torch.manual_seed(0)
    return UNet3DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=16, attention_head_dim=8, norm_num_groups=8,
    ).eval()


@pytest.fixture(scope="module")
def setup():
    unet = tiny_unet()
    torch.manual_seed(1)
    x = torch.randn(2, 4, 3, 8, 8)  # (B, C, F, H, W), diffusers' video layout
    text = torch.randn(2, 5, 16)
    tokens = torch.randn(2, 4, 24)
    with torch.no_grad():
        original = unet(x, 10, text).sample
    added = install_identity_processors(unet, identity_dim=24)
    return unet, x, text, tokens, original, added


def run(unet, x, text, **kwargs):
    with torch.no_grad():
        return unet(x, 10, text, cross_attention_kwargs=kwargs).sample


def test_install_puts_identity_only_on_spatial_cross_attention(setup):
    unet, *_, added = setup
    procs = unet.attn_processors
    identity = [k for k, p in procs.items() if isinstance(p, IdentityAttnProcessor)]
    assert identity and all(".attentions." in k and "attn2" in k for k in identity)
    assert len(identity) == len(added)
    others = [p for k, p in procs.items() if k not in identity]
    assert all(isinstance(p, IdentityPassThroughProcessor) for p in others)


def test_strength_zero_gives_exactly_the_original_output(setup):
    unet, x, text, tokens, original, _ = setup
    out = run(unet, x, text, identity_tokens=tokens, identity_strength=0.0)
    assert torch.equal(out, original)
    assert torch.allclose(run(unet, x, text), original, atol=1e-5)


def test_output_changes_with_strength_and_tokens(setup):
    unet, x, text, tokens, original, _ = setup
    a = run(unet, x, text, identity_tokens=tokens, identity_strength=0.5)
    b = run(unet, x, text, identity_tokens=tokens, identity_strength=1.5)
    c = run(unet, x, text, identity_tokens=torch.randn_like(tokens), identity_strength=1.5)
    d = (a - original).abs().mean()
    assert d > 1e-4
    assert (b - original).abs().mean() > 1.5 * d
    assert (c - b).abs().mean() > 1e-4


def test_face_masks_limit_identity_to_the_face(setup):
    """With an all-zero face mask the identity branch contributes nothing."""
    unet, x, text, tokens, original, _ = setup
    zero = torch.zeros(2, 3, 8, 8)
    out = run(unet, x, text, identity_tokens=tokens, identity_strength=1.0, face_masks=zero)
    assert torch.allclose(out, original, atol=1e-5)


def test_no_ignored_kwargs_warning(setup, caplog):
    unet, x, text, tokens, *_ = setup
    with caplog.at_level(logging.WARNING):
        run(unet, x, text, identity_tokens=tokens, identity_strength=0.8, face_masks=torch.ones(2, 3, 8, 8))
    assert not [r for r in caplog.records if "will be ignored" in r.getMessage()]


def test_plain_processor_would_warn(caplog):
    """Guards the test above: diffusers really does warn about kwargs a processor does not name."""
    unet = tiny_unet()
    with caplog.at_level(logging.WARNING):
        run(unet, torch.randn(1, 4, 2, 8, 8), torch.randn(1, 5, 16), identity_strength=0.8)
    assert any("will be ignored" in r.getMessage() for r in caplog.records)


def test_bad_token_shape_is_a_clear_error(setup):
    unet, x, text, tokens, *_ = setup
    with pytest.raises(ValueError, match="identity_tokens"):
        run(unet, x, text, identity_tokens=tokens[0], identity_strength=1.0)


def test_processor_with_the_kit_weights_copied_in_is_the_kit_identity_attention():
    """The diffusers processor and labkit.attention's identity cross-attention are one mechanism: with the
    kit's to_q, to_k_ip, to_v_ip and to_out copied into a diffusers Attention + IdentityAttnProcessor (and the
    text branch silenced, to_v = 0), both give the same output, and with strengths and face masks the
    processor's update is the kit block's gated update (strength x token mask x identity attention)."""
    from diffusers.models.attention_processor import Attention

    from labkit.attention import IdentityCrossAttention, masks_to_tokens

    dim, heads, identity_dim, videos, frames, side = 32, 4, 24, 2, 3, 4
    torch.manual_seed(0)
    kit = IdentityCrossAttention(dim, identity_dim, num_heads=heads)
    attn = Attention(query_dim=dim, cross_attention_dim=16, heads=heads, dim_head=dim // heads)
    proc = IdentityAttnProcessor(dim, identity_dim)
    with torch.no_grad():
        attn.to_q.weight.copy_(kit.to_q.weight)
        attn.to_out[0].load_state_dict(kit.to_out.state_dict())
        attn.to_v.weight.zero_()  # the text branch then adds exactly 0
        proc.to_k_ip.weight.copy_(kit.to_k_ip.weight)
        proc.to_v_ip.weight.copy_(kit.to_v_ip.weight)
    attn.set_processor(proc)
    x = torch.randn(videos * frames, side * side, dim)  # (B*F, N, dim), diffusers' spatial layout
    text = torch.randn(videos * frames, 5, 16)
    tokens = torch.randn(videos, 6, identity_dim)
    with torch.no_grad():
        expected, _ = kit(x, tokens.repeat_interleave(frames, dim=0))
        out = attn(x, text, identity_tokens=tokens, identity_strength=1.0)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)

        strength = torch.tensor([0.4, 1.3])
        masks = torch.zeros(videos, frames, 4 * side, 4 * side)
        masks[..., 3:11, 5:14] = 1.0
        gate = strength[:, None, None] * masks_to_tokens(masks, frames, (side, side))  # (B, F, N)
        kit_update = gate.reshape(videos * frames, -1, 1) * (expected - kit.to_out.bias)
        update = attn(x, text, identity_tokens=tokens, identity_strength=strength, face_masks=masks) - \
            attn(x, text, identity_tokens=tokens, identity_strength=0.0)
        torch.testing.assert_close(update, kit_update, atol=1e-5, rtol=1e-5)
