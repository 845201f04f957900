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


def _vbench_subject_consistency_loop(embeddings):
    """VBench's subject_consistency, written from its definition with loops: for every frame after the first,
    max(0, cos to the first frame) and max(0, cos to the previous frame), averaged, then over frames."""
    out = []
    for video in embeddings:
        total = 0.0
        for t in range(1, len(video)):
            cos_first = float(F.cosine_similarity(video[t], video[0], dim=0))
            cos_prev = float(F.cosine_similarity(video[t], video[t - 1], dim=0))
            total += (max(0.0, cos_first) + max(0.0, cos_prev)) / 2
        out.append(total / (len(video) - 1))
    return torch.tensor(out)


def test_subject_consistency_matches_vbench_with_both_terms_clipped_at_zero():
    emb = torch.randn(5, 9, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    emb[0, 4] = -emb[0, 0]  # a frame pointing away from the subject counts 0, not -1
    ours = metrics.subject_consistency(emb)
    assert torch.allclose(ours, _vbench_subject_consistency_loop(emb).to(ours.dtype), atol=1e-6)


def test_share_above_counts_frames_at_the_threshold_as_vbench2_does():
    sim = torch.tensor([[0.5, 0.6, 0.7, 0.4], [0.6, 0.6, 0.59, 0.61]])
    loop = torch.tensor([sum(1.0 for v in row if v >= 0.6) / len(row) for row in sim.tolist()])
    assert torch.allclose(metrics.share_above(sim, 0.6), loop, atol=1e-6)
    assert metrics.share_above(sim, 0.6)[1].item() == 0.75


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


def test_crop_regions_frame_a_face_like_a_portrait():
    from labkit import synthfaces

    g = torch.Generator().manual_seed(0)
    portraits, masks = synthfaces.render_faces(synthfaces.test_ids(6), 64, g, zoom=1.0, shift_x=0.0, shift_y=0.0)
    crops = metrics.crop_regions(portraits, masks[:, None], size=64)
    assert crops.shape == (6, 1, 3, 64, 64)
    # A centred portrait cut out around its own face comes back as (nearly) the same picture.
    assert (crops[:, 0] - portraits).abs().mean() < 0.12
    # A face shrunk into a corner of a bigger frame is cut out at the same framing.
    small = torch.nn.functional.interpolate(portraits, size=(32, 32), mode="bilinear", antialias=True)
    frame = -torch.ones(6, 3, 96, 96)
    frame[:, :, 10:42, 50:82] = small
    mask = torch.zeros(6, 1, 96, 96)
    mask[:, 0, 10:42, 50:82] = torch.nn.functional.interpolate(masks[:, None], size=(32, 32), mode="area")[:, 0]
    again = metrics.crop_regions(frame, mask, size=32)[:, 0]
    assert (again - small).abs().mean() < 0.15


def test_summarise_scores_reports_drift_per_chunk_and_the_standard_error():
    scores = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.8, 0.8, 0.2, 0.2]])
    emb = unit(2, 4, 16)
    out = metrics.summarise_scores(scores, torch.ones(2, 4), emb, torch.zeros(2, 4, 3, 4, 4), chunk_starts=[0, 2])
    assert out["per_chunk"] == pytest.approx([0.9, 0.1])
    assert out["identity_score"] == pytest.approx(0.5) and out["identity_score_se"] == pytest.approx(0.0)
    assert out["per_video"] == pytest.approx([0.5, 0.5]) and out["variety"] == 0 and out["face_quality"] == 1
    assert out["share_above"] == pytest.approx(0.5)  # 1.0, 1.0, 0.8, 0.8 of 8 frames reach 0.5
    a = {"per_video": [0.9, 0.7, 0.8]}
    b = {"per_video": [0.4, 0.3, 0.2]}
    d, se = metrics.paired_difference(a, b)
    assert d == pytest.approx(0.5) and se == pytest.approx(torch.tensor([0.5, 0.4, 0.6]).std().item() / 3**0.5)


@pytest.fixture(scope="module")
def recognizer():
    from labkit.faces import load_recognizer

    return load_recognizer()


@pytest.fixture(scope="module")
def reports(recognizer):
    return {size: metrics.score_report(size, num_identities=12, num_frames=8, seed=1, recognizer=recognizer)
            for size in (32, 64)}


@pytest.mark.parametrize("size", [32, 64])
def test_identity_scores_are_high_for_the_person_and_zero_for_strangers_and_non_faces(reports, size):
    r = reports[size]
    assert r["same person"] >= 0.8
    assert r["another person"] <= 0.15
    assert r["8x8 colour blocks"] <= 0.3
    assert r["flat colour"] <= 0.1 and r["pure noise"] <= 0.1


@pytest.mark.parametrize("size", [32, 64])
def test_identity_scores_keep_look_alikes_at_most_half_way_to_the_person(reports, size):
    r = reports[size]
    assert r["look-alike"] <= 0.5, f"look-alike scores {r['look-alike']:.2f} at {size}px"


def test_the_identity_encoder_alone_would_let_look_alikes_pass(reports):
    """Why identity_scores uses its own recognizer: the video model's encoder ("synthfaces") keeps hair and
    colours in its embeddings (the model must draw them), so it scores a look-alike far higher."""
    from labkit.faces import FaceRecognitionBackbone

    encoder = metrics.score_report(32, num_identities=12, num_frames=8, seed=1,
                                   recognizer=FaceRecognitionBackbone("synthfaces"))
    scorer = reports[32]  # the same people, frames and seed with the scoring recognizer
    assert encoder["look-alike"] > 0.5 >= scorer["look-alike"]
    assert encoder["same person"] >= 0.8 and scorer["same person"] >= 0.8


def test_identity_scores_shape_and_parts(recognizer):
    from labkit.synthfaces import make_clips, test_ids

    clips = make_clips(test_ids(2), num_frames=3, size=32, num_refs=2, generator=torch.Generator().manual_seed(0))
    scores, parts = metrics.identity_scores(clips.frames, clips.references, recognizer, return_parts=True)
    assert scores.shape == (2, 3)
    assert parts["face_probability"].shape == (2, 3) and parts["ceiling"] > parts["floor"]


@pytest.mark.parametrize("frames, refs, error, match", [
    (torch.zeros(2, 3, 3, 32, 32), torch.zeros(3, 2, 3, 32, 32), ValueError, "same batch size"),
    (torch.zeros(2, 3, 3, 32, 32), torch.zeros(2, 0, 3, 32, 32), ValueError, r"reference_images is empty.*\(2, 0, 3"),
    (torch.full((1, 2, 3, 32, 32), 2.0), torch.zeros(1, 1, 3, 32, 32), ValueError, r"\[-1, 1\].*\(1, 2, 3, 32, 32\)"),
    (torch.zeros(1, 2, 4, 32, 32), torch.zeros(1, 1, 3, 32, 32), ValueError, r"3 colour channels.*\(1, 2, 4, 32, 32\)"),
    (torch.zeros(1, 2, 3, 16, 16), torch.zeros(1, 1, 3, 32, 32), ValueError, "at least 32x32"),
    (torch.zeros(3, 32, 32), torch.zeros(1, 1, 3, 32, 32), ValueError, r"\(B, N, 3, H, W\).*\(3, 32, 32\)"),
])
def test_identity_scores_bad_input_names_the_shape(recognizer, frames, refs, error, match):
    with pytest.raises(error, match=match):
        metrics.identity_scores(frames, refs, recognizer)


def test_identity_scores_refuse_references_that_are_not_faces(recognizer):
    from labkit.synthfaces import make_clips, test_ids

    clips = make_clips(test_ids(1), num_frames=2, size=32, num_refs=2, generator=torch.Generator().manual_seed(0))
    refs = clips.references.clone()
    refs[0, 1] = 0.3  # a flat grey picture
    with pytest.raises(ValueError, match="reference image 1 of video 0 does not look like a face"):
        metrics.identity_scores(clips.frames, refs, recognizer)


def test_real_scenes_score_like_single_faces_and_rarely_swap(recognizer):
    report = metrics.scene_report(recognizer, num_scenes=24, num_frames=2)
    for c, r in report.items():
        assert abs(r["own"] - r["single"]) <= 0.1, (c, r)
        assert r["swap_rate"] <= 0.05, (c, r)


def test_verdicts_follow_the_effect_size_not_its_significance():
    """A tiny but statistically clear difference (the +0.0027 that once read as "DEPENDS on its tokens") is no
    difference that matters; a verdict says higher or lower only when the whole interval is beyond the smallest
    difference that matters; otherwise it is unclear."""
    from labkit.metrics import MEANINGFUL_DIFFERENCE, describe_effect, effect_verdict

    assert MEANINGFUL_DIFFERENCE == 0.05
    assert effect_verdict(0.0027, 0.0005).startswith("no difference that matters")
    assert effect_verdict(0.20, 0.03).startswith("higher")
    assert effect_verdict(-0.20, 0.03).startswith("lower")
    assert effect_verdict(0.06, 0.01).startswith("unclear"), "0.06 - 2 x 0.01 lies inside 0.05"
    assert effect_verdict(0.0, 0.2).startswith("unclear"), "a wide interval says nothing either way"
    assert effect_verdict(0.3, 0.03, smallest=0.5).startswith("no difference")
    line = describe_effect("explicit - implicit", 0.123, 0.02)
    assert "+0.123 +- 0.020" in line and "+0.083 to +0.163" in line and "0.05" in line and "higher" in line
