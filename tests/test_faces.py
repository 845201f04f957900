"""The face toolkit: MTCNN on a real photo, the frozen recognizers, their weights and their failure modes."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from labkit import face_verification, faces, recognizer_training, synthfaces


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()  # (512, 512, 3) uint8, one face


@pytest.fixture(scope="module")
def recognizer():
    return faces.FaceRecognitionBackbone("synthfaces")


def test_mtcnn_finds_the_astronauts_face(astronaut):
    det = faces.detect_faces(astronaut)
    assert len(det) == 1 and det.messages == []
    x1, y1, x2, y2 = det.boxes[0].tolist()
    assert 150 < (x1 + x2) / 2 < 250 and 50 < (y1 + y2) / 2 < 150 and det.probs[0] > 0.99
    assert det.crops.shape == (1, 3, 160, 160) and det.crops.min() >= -1 and det.crops.max() <= 1
    assert det.masks.shape == (1, 512, 512) and det.masks[0].sum() == pytest.approx((x2 - x1) * (y2 - y1), rel=0.05)


def test_blank_image_gives_an_empty_result_and_a_message():
    with pytest.warns(UserWarning, match="no face found in image 0"):
        det = faces.detect_faces(np.full((200, 200, 3), 128, np.uint8))
    assert len(det) == 0 and det.boxes.shape == (0, 4) and det.crops.shape == (0, 3, 160, 160)
    assert "no face found" in det.message


def test_image_too_small_for_mtcnn_gives_a_message_not_an_error_from_inside_mtcnn():
    """MTCNN itself fails with torch.cat on an empty list for images under 20 pixels a side."""
    with pytest.warns(UserWarning, match="too small for MTCNN"):
        det = faces.detect_faces([np.zeros((8, 8, 3), np.uint8), np.zeros((19, 40, 3), np.uint8)])
    assert len(det) == 0 and len(det.messages) == 2


@pytest.mark.parametrize("images, match", [
    (np.zeros((50, 50, 5), np.uint8), r"\(H, W, 3\)"),
    (np.full((50, 50, 3), 2.0), r"read as \[0, 1\]"),
    (torch.zeros(1, 1, 32, 32), r"\(B, 3, H, W\)"),
])
def test_detect_faces_rejects_wrong_image_layouts_clearly(images, match):
    with pytest.raises(ValueError, match=match):
        faces.detect_faces(images)


def test_mixed_batch_keeps_the_face_and_reports_the_blank(astronaut):
    blank = np.zeros_like(astronaut)
    with pytest.warns(UserWarning, match="image 1 of 3"):
        det = faces.detect_faces(np.stack([astronaut, blank, astronaut]))
    assert det.image_index.tolist() == [0, 2] and len(det.messages) == 1


def test_box_to_mask_uses_pixel_centres():
    m = faces.box_to_mask([1.0, 2.0, 4.0, 3.0], 5, 6)
    assert m.shape == (5, 6) and m.sum() == 3 and m[2, 1:4].tolist() == [1, 1, 1]
    assert faces.box_to_mask(torch.tensor([[0, 0, 2, 2], [0, 0, 0, 0]]), 3, 3).sum(dim=(1, 2)).tolist() == [4, 0]
    with pytest.raises(ValueError, match="x1, y1, x2, y2"):
        faces.box_to_mask([1, 2, 3], 4, 4)
    with pytest.raises(ValueError, match="height and width"):
        faces.box_to_mask([0, 0, 1, 1], -1, 4)
    assert faces.box_to_mask([0, 0, 1, 1], np.int64(2), 3).shape == (2, 3), "numpy ints are fine"


def test_recognizer_is_frozen_eval_unit_norm_any_size(recognizer):
    assert not recognizer.training and not any(p.requires_grad for p in recognizer.parameters())
    recognizer.train()
    assert not recognizer.training, "train() cannot switch the measuring instrument back to training"
    for size in (32, 64, 100):
        e = recognizer(torch.rand(2, 3, size, size) * 2 - 1)
        assert e.shape == (2, 512) and torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-4)
    x = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_()
    recognizer(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0, "gradients reach the input images"
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        recognizer(torch.rand(3, 32, 32))


def test_same_identity_is_closer_than_different_identities(recognizer):
    g = torch.Generator().manual_seed(0)
    ids = synthfaces.test_ids(12).repeat_interleave(2)
    for size in (64, 32):
        imgs, _ = synthfaces.render_faces(ids, size, g)
        with torch.no_grad():
            e = recognizer(imgs).view(12, 2, -1)
        same = (e[:, 0] * e[:, 1]).sum(-1)
        sim = e[:, 0] @ e[:, 1].T
        diff = sim[~torch.eye(12, dtype=torch.bool)]
        assert same.mean() > diff.mean() + 0.4
        assert (sim.argmax(1) == torch.arange(12)).float().mean() >= 0.9


def test_verification_figures_on_held_out_identities(recognizer):
    r = face_verification.verification_report(recognizer, size=32, num_identities=60, images_per_identity=3)
    assert r["eer"] <= 0.05 and r["roc_auc"] > 0.98
    assert r["ceiling"] > r["floor"] + 0.3 and r["ceiling_cut"] > r["floor_cut"] + 0.3
    assert r["ceiling"] >= r["ceiling_cut"], "a cut changes more than a pose does"
    # Look-alikes (the person's colours and hair on another face) are harder than strangers, but still told apart.
    assert r["lookalike_eer"] > r["eer"] and r["lookalike_roc_auc"] > 0.8


def test_cosine_similarity_matrix():
    a, b = torch.randn(4, 8), torch.randn(3, 8)
    ref = torch.nn.functional.cosine_similarity(a[:, None], b[None], dim=-1)
    assert torch.allclose(faces.cosine_similarity_matrix(a, b), ref, atol=1e-5)
    with pytest.raises(ValueError, match="same D"):
        faces.cosine_similarity_matrix(a, torch.randn(3, 5))


def test_corrupt_weights_file_gives_a_clear_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"this is not a weights file")
    with pytest.raises(ValueError, match="could not read face-recognizer weights.*corrupt"):
        faces.FaceRecognitionBackbone(bad)
    pt = tmp_path / "bad.pt"
    pt.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match="could not read"):
        faces.FaceRecognitionBackbone(pt)
    with pytest.raises(FileNotFoundError, match="no weights file"):
        faces.FaceRecognitionBackbone(tmp_path / "missing.pt")


def test_local_synthfaces_weights_path(tmp_path, recognizer):
    from safetensors.torch import save_file

    path = tmp_path / "copy.safetensors"
    save_file({k: v.contiguous() for k, v in recognizer.net.state_dict().items()}, str(path))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(faces.FaceRecognitionBackbone(path)(x), recognizer(x), atol=1e-5)


def test_vggface2_offline_error_is_fast_and_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(faces, "VGGFACE2_URL", "https://192.0.2.1/20180402-114759-vggface2.pt")  # unroutable
    t0 = time.time()
    with pytest.raises(RuntimeError, match="offline.*TORCH_HOME|weights="):
        faces.FaceRecognitionBackbone("vggface2")
    assert time.time() - t0 < 10


def test_a_slow_vggface2_download_is_not_mistaken_for_being_offline(tmp_path, monkeypatch):
    """Once the host answers, the download runs to the end however long it takes (110 MB on a slow line)."""
    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(faces, "_unreachable", lambda url, timeout: None)

    def slow_download(url, dst, progress=True):
        time.sleep(0.3)
        Path(dst).write_bytes(b"weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", slow_download)
    path = faces._ensure_vggface2(timeout=0.05)
    assert path.read_bytes() == b"weights" and path.name == "20180402-114759-vggface2.pt"


def test_corrupt_cached_vggface2_file_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "checkpoints" / "20180402-114759-vggface2.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated download")
    with pytest.raises(ValueError, match="corrupt"):
        faces.FaceRecognitionBackbone("vggface2")


def test_vggface2_loads_a_locally_made_weights_file_through_facenet(tmp_path, monkeypatch):
    from facenet_pytorch import InceptionResnetV1

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    net = InceptionResnetV1(classify=True, num_classes=8631).eval()
    cached = tmp_path / "checkpoints" / "20180402-114759-vggface2.pt"
    cached.parent.mkdir(parents=True)
    torch.save(net.state_dict(), cached)
    backbone = faces.FaceRecognitionBackbone("vggface2")
    assert backbone.input_size == 160 and not any(p.requires_grad for p in backbone.parameters())
    x = torch.rand(1, 3, 160, 160) * 2 - 1
    with torch.no_grad():
        expected = torch.nn.functional.normalize(net.eval()(x) if not net.classify else _embed(net, x), dim=-1)
    assert torch.allclose(backbone(x), expected, atol=1e-4)
    local = faces.FaceRecognitionBackbone(cached)  # the same file as a local path
    assert torch.allclose(local(x), expected, atol=1e-4)


def _embed(net, x):
    net.classify = False
    try:
        return net(x)
    finally:
        net.classify = True


def _one_face_near_the_astronauts(det):
    assert len(det) == 1 and det.messages == [], det.message
    x1, y1, x2, y2 = det.boxes[0].tolist()
    assert 150 < (x1 + x2) / 2 < 250 and 50 < (y1 + y2) / 2 < 150


def test_detect_faces_reads_a_png_loaded_by_matplotlib_and_greyscale_images(astronaut, tmp_path):
    """Float arrays are [0, 1] (plt.imread, skimage); greyscale (H, W) float or uint8, RGBA and PIL all work."""
    import matplotlib.pyplot as plt
    from PIL import Image
    from skimage.color import rgb2gray

    path = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    png = plt.imread(path)  # float32 (H, W, 3) in [0, 1]
    assert png.dtype == np.float32 and png.max() <= 1.0
    _one_face_near_the_astronauts(faces.detect_faces(png))
    grey = rgb2gray(astronaut)  # float64 (H, W) in [0, 1]
    _one_face_near_the_astronauts(faces.detect_faces(grey))
    _one_face_near_the_astronauts(faces.detect_faces((grey * 255).round().astype(np.uint8)))
    rgba = np.concatenate([astronaut, np.full((*astronaut.shape[:2], 1), 255, np.uint8)], axis=-1)
    _one_face_near_the_astronauts(faces.detect_faces(rgba))
    _one_face_near_the_astronauts(faces.detect_faces(Image.open(path)))
    tensor = torch.from_numpy(astronaut).permute(2, 0, 1).float() / 127.5 - 1
    _one_face_near_the_astronauts(faces.detect_faces(tensor))


@pytest.mark.parametrize("images, error, match", [
    (np.full((64, 64, 3), 200.0), ValueError, r"\[200, 200\].*read as \[0, 1\]"),
    (np.full((64, 64, 3), -0.5), ValueError, r"read as \[0, 1\]"),
    (torch.full((3, 64, 64), 3.0), ValueError, r"read as \[-1, 1\]"),
    (np.full((64, 64, 3), np.nan), ValueError, "NaN"),
    (np.zeros((3, 64, 64), np.uint8), ValueError, "channels-first"),
    (np.zeros((64, 64, 3), bool), TypeError, "bool"),
    ("astronaut.png", TypeError, "str"),
])
def test_detect_faces_refuses_out_of_range_and_unreadable_images_in_one_line(images, error, match):
    with pytest.raises(error, match=match) as err:
        faces.detect_faces(images)
    assert "\n" not in str(err.value) and "images" in str(err.value)


def test_face_check_passes_real_renders_and_refuses_what_a_failing_generator_draws():
    from labkit.synthfaces import make_clips, test_ids

    rec = faces.load_recognizer()
    g = torch.Generator().manual_seed(0)
    real = make_clips(test_ids(100, offset=11_000), num_frames=1, size=32, num_refs=2, generator=g).references
    real = real.flatten(0, 1)
    p_real = faces.embed_with_face_probability(rec, real)[1]
    p_not = faces.embed_with_face_probability(rec, recognizer_training.not_faces(real, g))[1]
    p_corrupt = faces.embed_with_face_probability(rec, recognizer_training.corrupted_faces(real, g))[1]
    assert (p_real >= faces.NOT_A_FACE_BELOW).all() and (p_real >= 0.5).float().mean() >= 0.97
    assert p_not.mean() < 0.1 and p_corrupt.mean() < 0.2


def test_the_baseline_recognizer_ships_for_the_look_alike_comparison():
    base = faces.FaceRecognitionBackbone("synthfaces-baseline")
    assert base.has_face_check and base.score_levels["32"]["ceiling"] > base.score_levels["32"]["floor"]


def test_labkit_faces_imports_no_higher_floor():
    assert faces.detect_faces.__module__ == "labkit.face_detection"
    assert not hasattr(faces, "train_recognizer") and not hasattr(faces, "verification_metrics")
    code = ("import sys, labkit.faces; print(sorted(m for m in sys.modules if m.startswith('labkit.') "
            "or m in ('facenet_pytorch', 'sklearn')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['labkit.common', 'labkit.face_detection', 'labkit.faces']"



def test_scores_use_the_scoring_recognizer_and_the_model_its_encoder():
    """identity_scores (through load_recognizer) uses "synthfaces-eval"; the video model's tokens come from
    "synthfaces". Two different networks: a model is not judged by the one it was conditioned on."""
    scorer, encoder = faces.load_recognizer(), faces.FaceRecognitionBackbone()
    assert scorer.weights_name == faces.SCORING_RECOGNIZER == "synthfaces-eval"
    assert encoder.weights_name == "synthfaces"
    x = torch.zeros(1, 3, 32, 32)
    assert not torch.allclose(scorer(x), encoder(x))
    meta = faces.weights_metadata(faces.data_path(faces.EVAL_WEIGHTS))
    assert float(meta["look_swap"]) > 0 and "levels" in meta


def test_the_scorer_tells_look_alikes_apart_better_than_the_identity_encoder(recognizer):
    scorer = faces.load_recognizer()
    kw = dict(size=32, num_identities=60, images_per_identity=3)
    enc, ev = (face_verification.verification_report(r, **kw) for r in (recognizer, scorer))
    assert ev["roc_auc"] > 0.95 and ev["ceiling_cut"] > ev["floor_cut"] + 0.3
    assert ev["lookalike_roc_auc"] > enc["lookalike_roc_auc"] + 0.02, (ev, enc)
