"""The synthetic face world: identities are stable and disjoint, masks are exact, motion and cuts behave."""

import pytest
import torch

from labkit import synthfaces as sf


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_same_id_gives_the_same_traits_in_any_batch():
    a = sf.identity_traits([3, 17, 1_000_005])
    b = sf.identity_traits([1_000_005, 99, 3])
    for k in a:
        assert torch.equal(a[k][0], b[k][2]), k
        assert torch.equal(a[k][2], b[k][0]), k


def test_different_ids_give_different_traits_and_at_least_15_of_them():
    t = sf.identity_traits(sf.train_ids(200))
    assert len(t) >= 15
    assert t["skin_color"].std(0).min() > 0.05 and len(t["hair_style"].unique()) == len(sf.HAIR_STYLES)
    for flag in ("glasses", "beard", "earrings", "mole", "freckles"):
        assert 0.05 < t[flag].mean() < 0.6, flag


def test_train_and_test_ids_are_disjoint_and_documented():
    assert set(sf.train_ids(1000, offset=999_000).tolist()).isdisjoint(sf.test_ids(1000).tolist())
    assert sf.test_ids(3).min() >= sf.TRAIN_ID_LIMIT == 1_000_000
    assert "1_000_000" in sf.__doc__
    with pytest.raises(ValueError, match="train ids"):
        sf.train_ids(10, offset=999_995)


def test_render_range_shapes_and_exact_masks():
    img, mask = sf.render_faces(sf.train_ids(6), 64, _g())
    assert img.shape == (6, 3, 64, 64) and mask.shape == (6, 64, 64)
    assert img.min() >= -1 and img.max() <= 1 and mask.min() >= 0 and mask.max() <= 1
    assert (mask > 0.99).float().mean() > 0.05, "the face covers a visible part of the image"
    assert mask[:, 0, :].max() == 0 and mask[:, :, 0].max() == 0, "no face at the image border"


def test_masks_follow_the_face_when_the_camera_shifts():
    t = sf.identity_traits([5, 5])
    nu = sf.sample_nuisances(2, _g(), shift_x=torch.tensor([-0.2, 0.2]), roll=0.0, yaw=0.0)
    _, mask = sf.render(t, nu, 64)
    cols = torch.arange(64).float()
    centre = [(m.sum(0) * cols).sum() / m.sum() for m in mask]
    assert centre[1] - centre[0] == pytest.approx(0.4 * 32 * 1.0 * 1, abs=1.5)


def test_edges_are_anti_aliased():
    _, mask = sf.render_faces([1, 2, 3, 4], 64, _g())
    partial = ((mask > 0.05) & (mask < 0.95)).sum(dim=(1, 2))
    inside = (mask >= 0.95).sum(dim=(1, 2))
    assert (partial > 10).all(), "edge pixels take intermediate values"
    assert (partial < inside).all(), "edges are about one pixel wide, not a blur"


def test_yaw_moves_features_non_rigidly():
    """Turning the head moves the eyes, nose and mouth across the face, not the whole face as one piece."""
    traits = sf.identity_traits(sf.train_ids(50))
    light = (traits["hair_color"].min(1).values > 0.7) | (traits["skin_color"].min(1).values > 0.7)
    who = int((~light & (traits["glasses"] == 0)).nonzero()[0])
    t = sf.identity_traits([who, who])
    nu = sf.sample_nuisances(2, _g(), yaw=torch.tensor([0.0, 0.6]), roll=0.0, pitch=0.0, zoom=1.0,
                             shift_x=0.0, shift_y=0.0, smile=0.0, blink=0.0, mouth_open=0.0, brightness=1.0,
                             light_strength=0.0)
    layers = sf.character_layers(t, nu, 128)  # canonical camera, 128 pixels: 1 unit = 64 pixels
    face = layers[:, 4]
    cols = torch.arange(128).float()
    face_cx = [(f.sum(0) * cols).sum() / f.sum() for f in face]
    white = ((layers[:, :3].min(1).values > 0.8) & (face > 0.99)).float()  # the whites of the eyes
    feat_cx = [(d.sum(0) * cols).sum() / d.sum() for d in white]
    assert 10 < white[1].sum() < white[0].sum(), "the eyes are foreshortened when the head turns"
    assert feat_cx[1] - feat_cx[0] > 8, "features slide towards the turn"
    assert abs(face_cx[1] - face_cx[0]) < 3, "the head outline barely moves"


def test_clip_shapes_smooth_motion_and_cuts_change_background():
    b = sf.make_clips([11, 1_000_011], num_frames=10, size=64, num_refs=2, num_cuts=1, generator=_g())
    assert b.frames.shape == (2, 10, 3, 64, 64) and b.masks.shape == (2, 10, 64, 64)
    assert b.references.shape == (2, 2, 3, 64, 64) and b.cuts.shape == (2, 10)
    assert not b.cuts[:, 0].any() and (b.cuts.sum(1) == 1).all()
    corner = b.frames[..., :6, :6].mean(dim=(-1, -2, -3))  # (B, F): background only
    jumps = (corner[:, 1:] - corner[:, :-1]).abs()
    at_cut = jumps[b.cuts[:, 1:]]
    within = jumps[~b.cuts[:, 1:]]
    assert (at_cut > within.max()).all() or at_cut.min() > 0.02
    assert within.max() < 1e-4, "the background is static within a shot"


def test_make_clip_single_version():
    c = sf.make_clip(3, num_frames=5, num_refs=1, num_cuts=2, generator=_g())
    assert c.frames.shape == (5, 3, 64, 64) and len(c.cuts) == 2 and c.identity == 3 and 0 not in c.cuts


def test_scenes_have_one_mask_per_character_side_by_side():
    s = sf.make_scenes(torch.tensor([[1, 2, 3]]), num_frames=3, size=96, num_refs=2, generator=_g())
    assert s.frames.shape == (1, 3, 3, 96, 96) and s.masks.shape == (1, 3, 3, 96, 96)
    assert s.references.shape == (1, 3, 2, 3, 96, 96)
    cols = torch.arange(96).float()
    m = s.masks[0, 0]
    centres = [(mi.sum(0) * cols).sum() / mi.sum() for mi in m]
    assert centres[0] < centres[1] < centres[2]
    assert (m.sum(0) <= 1 + 1e-5).all(), "character masks do not overlap"


def test_dataset_items_are_the_same_in_any_worker():
    ds = sf.ClipDataset(sf.train_ids(6), num_frames=4, size=32, num_refs=1, num_cuts=1, seed=5)
    torch.manual_seed(123)
    a = ds[3]
    torch.manual_seed(999)  # a worker's global RNG state must not matter
    b = ds[3]
    assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["cuts"], b["cuts"])
    assert not torch.equal(ds[2]["frames"], a["frames"])
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    batches = list(loader)
    assert torch.equal(batches[1]["frames"][1], a["frames"])


@pytest.mark.parametrize("call, match", [
    (lambda: sf.make_clips([1], num_frames=0), "num_frames"),
    (lambda: sf.make_clips([1], size=8), "size"),
    (lambda: sf.make_clips([1], num_frames=3, num_cuts=3), "num_cuts"),
    (lambda: sf.make_scenes(torch.tensor([[1, 2, 3, 4, 5]])), "2 <= C <= 4"),
    (lambda: sf.make_scenes(torch.tensor([[1, 2, 3, 4]]), size=48), "do not fit"),
    (lambda: sf.render_faces(torch.tensor([1.5])), "integers"),
    (lambda: sf.sample_nuisances(2, tilt=1.0), "unknown nuisance"),
    (lambda: sf.render_faces([]), "at least one identity"),
    (lambda: sf.make_clips([1], num_refs=-1), "num_refs"),
    (lambda: sf.ClipDataset([1, 2], num_frames=0), "num_frames"),
    (lambda: sf.make_scenes(torch.tensor([[1]])), "2 <= C <= 4"),
    (lambda: sf.render(sf.identity_traits([1, 2]), sf.sample_nuisances(3)), "expected"),
])
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_the_drawing_is_the_one_the_shipped_models_were_trained_on():
    """The recognizer and the video model in data/ learnt these pictures: any change to the drawing shows here."""
    img, mask = sf.render_faces(sf.train_ids(16), 64, _g())
    assert img.double().mean().item() == pytest.approx(-0.06595763, abs=2e-6)
    assert img.double().abs().mean().item() == pytest.approx(0.44219907, abs=2e-6)
    assert img[:, 2].double().mean().item() == pytest.approx(-0.11205384, abs=2e-6)
    assert mask.double().sum().item() == pytest.approx(11319.165, abs=0.05)


def test_hair_styles_name_every_number_of_their_row():
    from labkit.synth_styles import HAIR_STYLE_SHAPES, HairStyle

    assert sf.HAIR_STYLES == tuple(HAIR_STYLE_SHAPES)
    for name, style in HAIR_STYLE_SHAPES.items():
        assert len(style) == len(HairStyle._fields), name
        assert style.cap in (0, 1) and style.back_hair in (0, 1) and style.bun in (0, 1), name
    assert HAIR_STYLE_SHAPES["bald"].cap == 0 and HAIR_STYLE_SHAPES["bun"].bun == 1


def test_the_world_imports_nothing_above_it():
    import subprocess
    import sys

    code = "import sys, labkit.synthfaces; print(sorted(m for m in sys.modules if m.startswith('labkit.')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == str(sorted(["labkit.common", "labkit.synth_clips", "labkit.synth_drawing",
                                         "labkit.synth_styles", "labkit.synth_traits", "labkit.synthfaces"]))
