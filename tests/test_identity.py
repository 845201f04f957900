"""Identity tokens carry the identity: same face under other poses stays close, other faces move away; the
multi-character bank keeps characters apart."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labkit.identity import (
    IdentityEncoder,
    MultiCharacterIdentityBank,
    bank_cross_attention,
    degenerate_bank_attention,
    region_routing_mask,
)


class StandInBackbone(nn.Module):
    """Any module (N, 3, H, W) -> unit-norm (N, 512); it insists on 32x32 inputs and counts its calls."""

    input_size = 32

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 512, 8, stride=8)
        self.bn = nn.BatchNorm2d(512)
        self.calls = 0

    def forward(self, x):
        assert x.shape[-2:] == (32, 32), f"backbone got {tuple(x.shape)}"
        self.calls += 1
        return F.normalize(self.bn(self.conv(x)).mean(dim=(2, 3)), dim=-1)


def faces(n, size=64, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_tokens_have_the_bank_shape_and_the_backbone_gets_its_size_whatever_the_caller_passes():
    backbone = StandInBackbone()
    enc = IdentityEncoder(embed_dim=64, num_tokens=8, backbone=backbone, num_heads=4)
    for size in (64, 48):
        assert enc.encode_identity(faces(3, size)).shape == (3, 8, 64)
    assert enc.encode_identity(((faces(2) + 1) * 127.5).to(torch.uint8)).shape == (2, 8, 64)


def test_several_references_are_averaged_in_one_backbone_call():
    backbone = StandInBackbone()
    enc = IdentityEncoder(embed_dim=64, num_tokens=8, backbone=backbone, num_heads=4)
    refs = faces(6).reshape(2, 3, 3, 64, 64)
    tokens = enc.encode_identity(refs)
    assert backbone.calls == 1
    expected = enc.encode_embeddings(enc.embed_faces(refs).mean(dim=1))
    torch.testing.assert_close(tokens, expected)
    assert (tokens - enc.encode_identity(refs[:, 0])).abs().max() > 1e-4


def test_backbone_is_frozen_and_stays_in_eval_mode():
    enc = IdentityEncoder(embed_dim=64, num_tokens=8, backbone=StandInBackbone(), num_heads=4)
    enc.train()
    assert not enc.face_encoder.training and enc.training
    enc.encode_identity(faces(2)).square().mean().backward()
    assert all(p.grad is None for p in enc.face_encoder.parameters())
    assert enc.identity_bank.grad is not None and enc.projection.weight.grad.abs().sum() > 0


def test_single_key_cross_attention_is_degenerate_and_the_resampler_is_not():
    """With one key every query gets the same value; with [face; bank] keys the identity acts per token."""
    torch.manual_seed(0)
    d, t = 32, 6
    maps = [nn.Linear(d, d) for _ in range(4)]
    bank = torch.randn(1, t, d).expand(2, t, d)
    face = torch.randn(2, 1, d)
    out, weights = degenerate_bank_attention(bank, face, *maps, num_heads=4)
    assert torch.all(weights == 1.0)
    assert (out - out[:, :1]).abs().max() < 1e-6  # every token identical
    good = bank_cross_attention(bank, face, *maps, num_heads=4)
    identity_effect = good[0] - good[1]  # how the identity moves each token
    assert (identity_effect - identity_effect[:1]).abs().max() > 1e-3


def test_encoder_without_backbone_works_from_embeddings_only():
    enc = IdentityEncoder(embed_dim=64, num_tokens=8, backbone=None, num_heads=4)
    e = F.normalize(torch.randn(2, 3, 512), dim=-1)
    assert enc.encode_embeddings(e).shape == (2, 8, 64)
    with pytest.raises(RuntimeError, match="encode_embeddings"):
        enc.encode_identity(faces(2))
    with pytest.raises(ValueError, match=r"\(B, 512\).*\(2, 3, 256\)"):
        enc.encode_embeddings(torch.randn(2, 3, 256))
    with pytest.raises(ValueError, match=r"no reference faces.*\(2, 0, 512\)"):
        enc.encode_embeddings(torch.randn(2, 0, 512))


def test_bad_reference_inputs_raise_errors_naming_the_shape():
    enc = IdentityEncoder(embed_dim=64, num_tokens=8, backbone=StandInBackbone(), num_heads=4)
    with pytest.raises(ValueError, match=r"no reference faces.*\(2, 0, 3, 64, 64\)"):
        enc.encode_identity(torch.zeros(2, 0, 3, 64, 64))
    with pytest.raises(ValueError, match=r"no reference faces.*\(0, 3, 64, 64\)"):
        enc.encode_identity(torch.zeros(0, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, R, 3, H, W\).*\(3, 64, 64\)"):
        enc.encode_identity(torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\).*\(2, 1, 64, 64\)"):
        enc.encode_identity(torch.zeros(2, 1, 64, 64))


def make_bank(mode="concat", max_characters=3):
    return MultiCharacterIdentityBank(max_characters, embed_dim=64, num_tokens=4, backbone=StandInBackbone(),
                                      num_heads=4, mode=mode)


def test_multi_character_tokens_separators_and_owner_index():
    bank = make_bank()
    a, b = faces(2, seed=1), faces(6, seed=2).reshape(2, 3, 3, 64, 64)
    tokens, owner = bank.encode_multiple([a, b])
    assert bank.face_encoder.calls == 1
    assert tokens.shape == (2, 10, 64)
    assert owner.tolist() == [0] * 5 + [1] * 5
    torch.testing.assert_close(tokens[:, 4], bank.character_separator[0].expand(2, 64))
    torch.testing.assert_close(tokens[:, 9], bank.character_separator[1].expand(2, 64))
    # each slot has its own bank: the same face in slot 0 and slot 1 gives different tokens
    same, _ = bank.encode_multiple([a, a])
    assert (same[:, :4] - same[:, 5:9]).abs().max() > 1e-3
    # the scene tensor layout (B, C, R, 3, H, W) gives the same tokens
    scene = torch.stack([a.unsqueeze(1).expand(2, 3, 3, 64, 64), b], dim=1)
    torch.testing.assert_close(bank.encode_multiple(scene)[0], tokens)


def test_shared_mode_uses_one_bank_without_separators():
    bank = make_bank("shared")
    a, b = faces(2, seed=1), faces(2, seed=2)
    tokens, owner = bank.encode_multiple([a, b])
    assert tokens.shape == (2, 8, 64) and owner.tolist() == [0] * 4 + [1] * 4
    swapped, _ = bank.encode_multiple([b, a])
    torch.testing.assert_close(swapped[:, :4], tokens[:, 4:])
    assert bank.attention_mask(torch.ones(2, 1, 2, 4, 4), owner) is None


def test_region_routing_mask_routes_each_region_to_its_own_tokens():
    bank = make_bank("routed")
    _, owner = bank.encode_multiple([faces(1, seed=1), faces(1, seed=2)])
    masks = torch.zeros(1, 2, 2, 8, 8)
    masks[:, :, 0, :, :4] = 1.0
    masks[:, :, 1, :, 4:] = 1.0
    masks[:, 1, 1] = 0.0  # character B leaves the second frame
    route = bank.attention_mask(masks, owner, grid=(4, 4))
    assert route.shape == (1, 2, 16, 10) and route.dtype == torch.bool
    left, right = torch.arange(16) % 4 < 2, torch.arange(16) % 4 >= 2
    assert route[0, 0][left][:, owner == 0].all() and not route[0, 0][left][:, owner == 1].any()
    assert route[0, 0][right][:, owner == 1].all() and not route[0, 0][right][:, owner == 0].any()
    assert not route[0, 1][right].any()  # nobody's face: no identity token
    # token-resolution masks give the same routing as pixel masks pooled to the grid
    token_masks = F.adaptive_avg_pool2d(masks.flatten(0, 1), (4, 4)).reshape(1, 2, 2, 16)
    assert torch.equal(region_routing_mask(token_masks, owner), route)


def test_bad_character_inputs_raise_clear_errors():
    bank = make_bank(max_characters=2)
    with pytest.raises(ValueError, match="empty"):
        bank.encode_multiple([])
    with pytest.raises(ValueError, match=r"3 characters but max_characters=2"):
        bank.encode_multiple([faces(1)] * 3)
    with pytest.raises(ValueError, match=r"\(B, C, R, 3, H, W\)"):
        bank.encode_multiple(torch.zeros(1, 2, 3, 64, 64))
    with pytest.raises(ValueError, match="mode"):
        make_bank("blend")


@pytest.mark.parametrize("design", ["face_only", "resampler"])
def test_identity_tokens_of_one_face_under_other_poses_are_closer_than_of_other_faces(design):
    """With the real synthfaces recognizer and an untrained encoder: the tokens inherit the recognizer's
    geometry, so same-identity pairs (different pose, expression, lighting) beat different-identity pairs.

    The resampler's raw token similarities sit near 1 for every pair (the bank and the layer norms are the
    same for every face), so the gap is measured after removing the mean token over the faces; face-only
    tokens must also retrieve the right face on raw tokens."""
    from labkit import synthfaces

    torch.manual_seed(0)
    enc = IdentityEncoder(embed_dim=128, num_tokens=8, backbone="synthfaces", num_heads=4, design=design)
    ids = synthfaces.test_ids(12)
    g = torch.Generator().manual_seed(0)
    view_a, _ = synthfaces.render_faces(ids, size=64, generator=g)
    view_b, _ = synthfaces.render_faces(ids, size=64, generator=g)
    with torch.no_grad():
        ta, tb = enc.encode_identity(view_a).flatten(1), enc.encode_identity(view_b).flatten(1)
    eye = torch.eye(len(ids), dtype=torch.bool)
    sim = F.normalize(ta, dim=-1) @ F.normalize(tb, dim=-1).T
    # every identity: its other view is closer than any other identity's, on raw tokens
    retrieval = (sim.diag() > sim.masked_fill(eye, -1).amax(dim=1)).float().mean()
    assert retrieval >= (0.9 if design == "face_only" else 0.5)
    mean = torch.cat([ta, tb]).mean(dim=0)
    centred = F.normalize(ta - mean, dim=-1) @ F.normalize(tb - mean, dim=-1).T
    same, different = centred[eye].mean(), centred[~eye].mean()
    assert same > different + 0.5, (same, different)
