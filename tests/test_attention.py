"""Behaviour of IdentityAwareAttention: the SDPA block is the nn.MultiheadAttention block, masks gate exactly."""

import pytest
import torch

from labkit.attention import IdentityAwareAttention, MultiheadReferenceAttention, benchmark, masks_to_tokens
from labkit.identity import region_routing_mask


def make_block(dim=32, heads=4, identity_dim=24, seed=0):
    torch.manual_seed(seed)
    block = IdentityAwareAttention(dim, heads, identity_dim=identity_dim)
    with torch.no_grad():  # non-trivial norms and biases, so that copying them across is tested too
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return block


def inputs(b=2, f=3, side=4, dim=32, num_tokens=5, identity_dim=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, f, side * side, dim, generator=g)
    tokens = torch.randn(b, num_tokens, identity_dim, generator=g)
    masks = torch.zeros(b, f, side * 4, side * 4)
    masks[..., 4:12, 2:10] = 1.0  # a face box at pixel resolution (4x the token grid)
    return x, tokens, masks


@pytest.mark.parametrize("identity_dim", [24, 32])
def test_sdpa_block_matches_multihead_attention_reference_with_copied_weights(identity_dim):
    block = make_block(identity_dim=identity_dim)
    ref = MultiheadReferenceAttention.from_block(block)
    x, tokens, masks = inputs(identity_dim=identity_dim)
    strength = torch.tensor([0.3, 1.2])
    for face_masks in (None, masks, masks_to_tokens(masks, 3, (4, 4)) * 0.5):
        out, expected = block(x, tokens, face_masks, strength), ref(x, tokens, face_masks, strength)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(block(x), ref(x), atol=1e-5, rtol=1e-5)


def test_permuting_frames_permutes_spatial_and_identity_outputs():
    block = make_block()
    x, tokens, masks = inputs(f=5)
    perm = torch.tensor([3, 0, 4, 2, 1])
    out = block(x, tokens, masks, 0.7)
    out_perm = block(x[:, perm], tokens, masks[:, perm], 0.7)
    torch.testing.assert_close(out_perm, out[:, perm], atol=1e-5, rtol=1e-5)
    # and the frames really interact (temporal attention): changing one frame changes the others
    x2 = x.clone()
    x2[:, 0] += torch.randn_like(x2[:, 0])
    assert (block(x2, tokens, masks, 0.7)[:, 1:] - out[:, 1:]).abs().max() > 1e-3


def test_identity_strength_zero_equals_spatial_and_temporal_only():
    block = make_block()
    x, tokens, masks = inputs()
    plain = block(x)
    torch.testing.assert_close(block(x, tokens, masks, 0.0), plain, atol=0, rtol=0)
    per_sample = block(x, tokens, masks, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(per_sample[0], plain[0], atol=0, rtol=0)
    assert (per_sample[1] - plain[1]).abs().max() > 1e-3


def test_all_zero_mask_changes_nothing_and_background_is_untouched():
    block = make_block()
    x, tokens, masks = inputs()
    plain = block(x)
    torch.testing.assert_close(block(x, tokens, torch.zeros_like(masks), 1.0), plain, atol=0, rtol=0)
    out = block(x, tokens, masks, 1.0)
    token_masks = masks_to_tokens(masks, 3, (4, 4))
    outside = token_masks == 0
    assert outside.any() and (~outside).any()
    torch.testing.assert_close(out[outside], plain[outside], atol=0, rtol=0)
    assert (out[~outside] - plain[~outside]).abs().max() > 1e-3


def test_pixel_masks_are_area_averaged_to_the_token_grid():
    masks = torch.zeros(1, 1, 8, 8)
    masks[..., :2, :3] = 1.0  # covers token (0,0) fully and half of token (0,1)
    tok = masks_to_tokens(masks, 1, (4, 4))
    assert tok.shape == (1, 1, 16)
    assert tok[0, 0, 0] == 1.0 and tok[0, 0, 1] == 0.5 and tok[0, 0, 2:].sum() == 0


def test_region_routing_keeps_character_a_tokens_out_of_b_region_exactly():
    block = make_block(identity_dim=24)
    x, _, _ = inputs(b=1, f=2)
    g = torch.Generator().manual_seed(3)
    tokens = torch.randn(1, 8, 24, generator=g)
    token_character = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    char_masks = torch.zeros(1, 2, 2, 16, 16)
    char_masks[:, :, 0, :, :8] = 1.0   # A: left half
    char_masks[:, :, 1, 8:, 8:] = 1.0  # B: bottom-right quarter
    route = region_routing_mask(char_masks, token_character, grid=(4, 4))
    union = char_masks.amax(dim=2)
    out = block(x, tokens, union, 1.0, identity_attention_mask=route)
    changed_a = tokens.clone()
    changed_a[:, :4] += 5.0 * torch.randn(1, 4, 24, generator=g)
    out_a = block(x, changed_a, union, 1.0, identity_attention_mask=route)
    region_b = masks_to_tokens(char_masks[:, :, 1], 2, (4, 4)) >= 0.5
    region_a = masks_to_tokens(char_masks[:, :, 0], 2, (4, 4)) >= 0.5
    torch.testing.assert_close(out_a[region_b], out[region_b], atol=0, rtol=0)
    assert (out_a[region_a] - out[region_a]).abs().max() > 1e-3
    # without routing, A's tokens do reach B's region: the test above can fail
    free_a = block(x, changed_a, union, 1.0)
    assert (free_a[region_b] - block(x, tokens, union, 1.0)[region_b]).abs().max() > 1e-3
    assert not torch.isnan(out).any()


def test_fully_masked_query_rows_give_zero_update_not_nan():
    block = make_block()
    x, tokens, _ = inputs()
    no_route = torch.zeros(2, 3, 16, 5, dtype=torch.bool)
    out = block(x, tokens, None, 1.0, identity_attention_mask=no_route)
    torch.testing.assert_close(out, block(x), atol=0, rtol=0)
    x.requires_grad_(True)
    block(x, tokens, None, 1.0, identity_attention_mask=no_route).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_recorded_identity_attention_sums_to_one_and_update_is_zero_off_face():
    block = make_block()
    x, tokens, masks = inputs()
    block.record_identity_attention = True
    block(x, tokens, masks, 1.0)
    probs, update = block.last_identity_attention, block.last_identity_update
    assert probs.shape == (2, 3, 16, 5)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3, 16))
    off = masks_to_tokens(masks, 3, (4, 4)) == 0
    assert update[off].abs().max() == 0 and update[~off].abs().max() > 0


def test_bad_inputs_raise_errors_naming_shapes():
    block = make_block()
    x, tokens, masks = inputs()
    with pytest.raises(ValueError, match=r"F=3.*\(2, 4, 16, 16\)"):
        block(x, tokens, masks[:, :2].repeat(1, 2, 1, 1))
    with pytest.raises(ValueError, match=r"identity_dim=24.*\(2, 5, 32\)"):
        block(x, torch.randn(2, 5, 32), masks)
    with pytest.raises(ValueError, match=r">= 0"):
        block(x, tokens, masks, -0.1)
    with pytest.raises(ValueError, match=r">= 0"):
        block(x, tokens, masks, torch.tensor([0.5, float("nan")]))
    with pytest.raises(ValueError, match=r"\(B,\)=\(2,\)"):
        block(x, tokens, masks, torch.ones(3))
    with pytest.raises(ValueError, match=r"dim=32"):
        block(torch.randn(2, 3, 16, 8))


def test_benchmark_reports_medians_without_the_warm_up_run(monkeypatch):
    """With a clock whose readings are known, the benchmark's figures are the medians of the timed runs (the
    first pair, the warm-up, left out) and their ratio: the runs alternate sdpa, mha, sdpa, mha..."""
    import labkit.attention as attention

    durations = [100.0, 100.0, 1.0, 6.0, 3.0, 4.0, 2.0, 5.0]  # warm-up pair, then three timed pairs
    readings = iter([t for i, d in enumerate(durations) for t in (10.0 * i, 10.0 * i + d)])
    monkeypatch.setattr(attention.time, "perf_counter", lambda: next(readings))
    r = benchmark(frames=2, side=4, dim=32, num_heads=4, num_identity_tokens=4, repeats=3)
    assert (r["sdpa_s"], r["multihead_s"], r["speedup"]) == (2.0, 5.0, 2.5)


def test_pool_to_grid_gives_each_token_the_share_of_its_patch_the_mask_covers():
    from labkit.token_ops import pool_to_grid

    masks = torch.zeros(2, 3, 8, 8)
    masks[0, 1, 0:4, 0:2] = 1.0  # half of the top-left 4x4 patch
    masks[1, 2, 4:8, 4:8] = 1.0  # all of the bottom-right patch
    tokens = pool_to_grid(masks, (2, 2))
    assert tokens.shape == (2, 3, 4)
    expected = torch.zeros(2, 3, 4)
    expected[0, 1, 0], expected[1, 2, 3] = 0.5, 1.0
    assert torch.equal(tokens, expected)
    assert torch.equal(pool_to_grid(masks, (8, 8)), masks.flatten(-2))  # already at token resolution


def test_multihead_sdpa_is_multihead_attention_without_projections():
    """Identity projections in nn.MultiheadAttention leave exactly the head split, SDPA and merge."""
    from labkit.token_ops import multihead_sdpa

    torch.manual_seed(0)
    q, k, v = torch.randn(2, 5, 16), torch.randn(2, 7, 16), torch.randn(2, 7, 16)
    mha = torch.nn.MultiheadAttention(16, 4, batch_first=True, bias=False)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.eye(16).repeat(3, 1))
        mha.out_proj.weight.copy_(torch.eye(16))
    torch.testing.assert_close(multihead_sdpa(q, k, v, 4), mha(q, k, v)[0], atol=1e-5, rtol=1e-5)
