"""labkit.common: device choice, seeding, quick mode, and showing frames with or without ffmpeg."""

import io
import subprocess
import sys

import numpy as np
import pytest
import torch

from labkit import common


def test_import_labkit_is_light_and_offline():
    """`import labkit` loads no torch and opens no socket, so it is fast on a 2-core laptop."""
    code = (
        "import socket, sys, time\n"
        "def no_net(*a, **k): raise RuntimeError('network touched at import')\n"
        "socket.socket.connect = no_net\n"
        "t = time.perf_counter(); import labkit; dt = time.perf_counter() - t\n"
        "assert 'torch' not in sys.modules, 'import labkit pulled in torch'\n"
        "print(f'{dt:.3f}')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    print(f"import labkit took {float(out.stdout):.3f} s")


def test_submodules_load_lazily():
    import labkit

    assert labkit.common is common
    with pytest.raises(AttributeError):
        labkit.not_a_module  # noqa: B018


def test_seed_everything_repeats_random_draws():
    common.seed_everything(3)
    a = (torch.rand(4), np.random.rand(2))
    common.seed_everything(3)
    b = (torch.rand(4), np.random.rand(2))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_get_device_honours_preference():
    assert common.get_device("cpu").type == "cpu"
    assert common.get_device().type in {"cuda", "mps", "cpu"}


def test_quick_mode_reads_the_environment():
    code = "from labkit.common import QUICK; print(QUICK)"
    for value, expected in [("1", "True"), ("0", "False"), ("yes", "True")]:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={"LABKIT_QUICK": value, "PATH": ""})
        assert out.stdout.strip() == expected


def test_to_uint8_maps_range_and_layout():
    x = torch.stack([-torch.ones(3, 2, 2), torch.ones(3, 2, 2)])
    out = common.to_uint8(x)
    assert out.shape == (2, 2, 2, 3) and out.dtype == np.uint8
    assert out[0].max() == 0 and out[1].min() == 255


def test_to_uint8_names_the_bad_shape():
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\).*\(2, 4, 4\)"):
        common.to_uint8(torch.zeros(2, 4, 4))


def test_image_strip_tiles_rows_and_columns():
    strip = common.image_strip(torch.zeros(5, 3, 4, 4), ncols=3)
    assert strip.shape == (2 * 5 + 1, 3 * 5 + 1, 3)


def test_show_video_without_ffmpeg_falls_back_to_gif_and_says_so(monkeypatch, capsys):
    shown = []
    monkeypatch.setattr(common, "has_ffmpeg", lambda: False)
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    common.show_video(torch.rand(4, 3, 8, 8) * 2 - 1)
    assert "ffmpeg not found" in capsys.readouterr().out
    assert len(shown) == 1 and shown[0].data[:6] == b"GIF89a"


def test_videos_are_shown_at_least_256_screen_pixels_high(monkeypatch):
    """A 32x32 clip at scale 2 was a 64x64 postage stamp; the default now enlarges it to 256x256."""
    from PIL import Image

    assert [common.display_scale(h) for h in (8, 32, 64, 100, 300)] == [32, 8, 4, 3, 1]
    shown = []
    monkeypatch.setattr(common, "has_ffmpeg", lambda: False)
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    common.show_video(torch.rand(3, 3, 32, 32) * 2 - 1)
    assert Image.open(io.BytesIO(shown[0].data)).size == (256, 256)


def test_save_video_writes_mp4_with_ffmpeg_and_gif_without(tmp_path, monkeypatch):
    frames = torch.rand(6, 3, 16, 16) * 2 - 1
    if common.has_ffmpeg():
        path = common.save_video(frames, tmp_path / "clip.mp4")
        assert path.suffix == ".mp4" and path.stat().st_size > 0
    monkeypatch.setattr(common, "has_ffmpeg", lambda: False)
    path = common.save_video(frames, tmp_path / "clip2.mp4")
    assert path.suffix == ".gif" and path.read_bytes()[:6] == b"GIF89a"


def test_environment_report_lists_the_kit_dependencies():
    report = common.environment_report()
    for key in ["torch", "diffusers", "facenet-pytorch", "device", "ffmpeg", "quick mode"]:
        assert key in report
    assert report["facenet-pytorch"] == "2.5.3"


def test_use_one_cpu_thread_sets_one_thread_on_a_cpu_only():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert common.use_one_cpu_thread("cuda") == 2, "on a GPU the CPU threads are left alone"
        assert common.use_one_cpu_thread(torch.device("cpu")) == 1
    finally:
        torch.set_num_threads(before)
