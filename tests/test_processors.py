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
