"""Identity metrics: each figure moves the way its definition says, on hand-made embeddings and frames."""

import pytest
import torch
import torch.nn.functional as F

from labkit import metrics


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_reference_similarity_is_cosine_to_the_mean_reference():
    refs = unit(2, 3, 16)
    mean = F.normalize(refs.mean(1), dim=-1)
    frames = torch.stack([mean, -mean, unit(2, 16, seed=5)], dim=1)  # (B, 3, D)
    sim = metrics.reference_similarity(frames, refs)
    assert sim.shape == (2, 3)
    assert torch.allclose(sim[:, 0], torch.ones(2), atol=1e-5)
    assert torch.allclose(sim[:, 1], -torch.ones(2), atol=1e-5)


def test_normalised_identity_maps_floor_to_zero_and_ceiling_to_one():
    assert metrics.normalised_identity(0.2, ceiling=0.8, floor=0.2) == 0
    assert metrics.normalised_identity(0.8, ceiling=0.8, floor=0.2) == pytest.approx(1)
    with pytest.raises(ValueError, match="ceiling"):
        metrics.normalised_identity(0.5, ceiling=0.1, floor=0.2)


def test_stability_and_subject_consistency_drop_when_frames_wander():
    steady = unit(1, 1, 32).expand(1, 6, 32)
    wandering = unit(1, 6, 32, seed=1)
    assert metrics.frame_stability(steady).item() == pytest.approx(1, abs=1e-5)
    assert metrics.subject_consistency(steady).item() == pytest.approx(1, abs=1e-5)
    assert metrics.frame_stability(wandering).item() < 0.5
    assert metrics.subject_consistency(wandering).item() < 0.5


def test_stability_ignores_transitions_into_a_new_shot():
    a, b = unit(1, 1, 32), unit(1, 1, 32, seed=2)
    e = torch.cat([a, a, a, b, b, b], dim=1)
    cuts = torch.zeros(1, 6, dtype=torch.bool)
    cuts[0, 3] = True
    assert metrics.frame_stability(e, cuts).item() == pytest.approx(1, abs=1e-5)
    assert metrics.frame_stability(e).item() < 0.99


def test_share_above_threshold():
    sim = torch.tensor([[0.1, 0.5, 0.9, 0.95]])
    assert metrics.share_above(sim, 0.6).item() == pytest.approx(0.5)


def test_variety_is_zero_for_a_frozen_video_and_ignores_cuts():
    frozen = torch.rand(1, 1, 3, 8, 8).expand(1, 5, 3, 8, 8)
    assert metrics.variety(frozen).item() == 0
    moving = frozen.clone()
    moving[:, 3:] = -moving[:, 3:]
    cuts = torch.zeros(1, 5, dtype=torch.bool)
    cuts[0, 3] = True
    assert metrics.variety(moving).item() > 0
    assert metrics.variety(moving, cuts).item() == 0


def test_bleed_and_swap_on_clean_and_swapped_scenes():
    clean = torch.tensor([[0.9, 0.1], [0.2, 0.8]]).expand(1, 4, 2, 2)
    r = metrics.bleed_and_swap(clean)
    assert r["own"] == pytest.approx(0.85) and r["bleed"] == pytest.approx(0.15) and r["swap_rate"] == 0
    swapped = clean.flip(-1)
    assert metrics.bleed_and_swap(swapped)["swap_rate"] == 1


def test_crop_regions_follow_the_masks():
    frames = -torch.ones(1, 3, 16, 16)
    frames[:, :, :8, :8] = 1  # a white square top-left
    masks = torch.zeros(1, 2, 16, 16)
    masks[0, 0, :8, :8] = 1
    masks[0, 1, 8:, 8:] = 1
    crops = metrics.crop_regions(frames, masks, size=8, pad=0)
    assert crops.shape == (1, 2, 3, 8, 8)
    assert crops[0, 0].mean() > 0.9 and crops[0, 1].mean() < -0.9


def test_summarise_video_reports_drift_per_chunk():
    refs = unit(2, 3, 16)
    good = F.normalize(refs.mean(1), dim=-1)[:, None].expand(2, 4, 16)
    bad = unit(2, 4, 16, seed=9)
    emb = torch.cat([good, bad], dim=1)
    sim = metrics.reference_similarity(emb, refs)
    out = metrics.summarise_video(sim, emb, torch.zeros(2, 8, 3, 4, 4), {"ceiling": 1.0, "floor": 0.0},
                                  chunk_starts=[0, 4])
    assert out["per_chunk_normalised"][0] == pytest.approx(1, abs=1e-5)
    assert out["per_chunk_normalised"][1] < 0.5
    assert out["variety"] == 0
