"""Training: the loss falls, kill -9 + resume gives the same weights, NaN keeps the last good checkpoint."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from labkit.model import IdentityVideoDiT
from labkit.pipeline import make_scheduler
from labkit.train import PRESETS, compute_loss, load_checkpoint, make_batch, train

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "labkit.train", "--preset", "test-mini", "--device", "cpu", "--threads", "1",
       "--no-progress"]


def FAKE_RECOGNIZER(images):
    """Stands in for the face recognizer where only shapes matter: (N, 3, H, W) -> (N, 512) unit vectors."""
    return torch.nn.functional.normalize(images.flatten(1)[:, :512], dim=-1)


@pytest.fixture(autouse=True)
def _restore_threads():
    """train(num_threads=1) sets torch's global thread count (one thread is faster on a busy 2-core CPU)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def weights(run_dir):
    return load_file(str(Path(run_dir) / "model" / "diffusion_pytorch_model.safetensors"))


def run_cli(out, *extra, **kw):
    return subprocess.run(CLI + ["--out", str(out), *extra], cwd=REPO, capture_output=True, text=True, timeout=120,
                          **kw)


def test_batches_depend_only_on_seed_and_step():
    cfg = replace(PRESETS["test-mini"], device="cpu")
    a, b, c = (make_batch(cfg, s, FAKE_RECOGNIZER, "cpu") for s in (3, 3, 4))
    assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["noise"], b["noise"])
    assert not torch.equal(a["frames"], c["frames"])
    assert a["frames"].shape == (2, 8, 3, 32, 32)
    # Given context frames are never part of the loss, and a cut is a shot start.
    assert not a["cuts"][:, 0].any()


def test_training_lowers_the_loss_on_held_out_batches(tmp_path):
    """60 steps lower the denoising loss on fixed batches the run never saw, against the untrained model.

    (Per-step losses are too noisy over so few steps: each batch draws its own timesteps.)
    """
    cfg = replace(PRESETS["test-mini"], steps=60, batch_size=4, lr=3e-3, device="cpu", checkpoint_every=60,
                  num_threads=1)
    result = train(cfg, tmp_path, progress=False)
    assert (tmp_path / "loss.png").exists() and (tmp_path / "model" / "config.json").exists()
    assert len(result["losses"]) == 60 and result["clips_per_second"] > 0
    held_out = replace(cfg, batch_size=16, seed=99)
    scheduler = make_scheduler("ddpm")
    untrained = IdentityVideoDiT(sample_size=cfg.size, max_frames=cfg.num_frames, **cfg.model)

    def loss(model):
        with torch.no_grad():
            return sum(compute_loss(model.eval(), scheduler, make_batch(held_out, s, FAKE_RECOGNIZER, "cpu"),
                                    held_out)[0].item() for s in range(2)) / 2

    assert loss(result["model"]) < 0.85 * loss(untrained)


def test_kill_9_then_resume_ends_with_the_same_weights(tmp_path):
    """An interrupted run, resumed, equals an uninterrupted run of the same seed, weight for weight."""
    # The uninterrupted run in this process, with the CLI's settings (one thread: the same float sums).
    train(replace(PRESETS["test-mini"], steps=12, device="cpu", num_threads=1), tmp_path / "straight",
          progress=False)

    out = tmp_path / "killed"
    proc = subprocess.Popen(CLI + ["--out", str(out), "--steps", "12"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    ckpt = out / "checkpoint.pt"
    deadline = time.time() + 90
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = load_checkpoint(ckpt)["step"]
    assert 0 < killed_at < 12
    assert not (out / "model").exists()

    resumed = run_cli(out, "--steps", "12")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {ckpt} at step {killed_at}" in resumed.stdout
    a, b = weights(tmp_path / "straight"), weights(out)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    result = run_cli(tmp_path, "--steps", "12", "--fail-nan-at", "7")
    assert result.returncode == 2
    assert "loss is nan at step 7" in result.stdout
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 6
    assert not (tmp_path / "checkpoint.pt.tmp").exists()


def test_corrupt_training_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(tmp_path / "checkpoint.pt")


def test_resuming_with_other_settings_is_refused(tmp_path):
    """A checkpoint of one run is never silently continued with another model, seed or schedule."""
    cfg = replace(PRESETS["test-mini"], steps=2, checkpoint_every=2, device="cpu", num_threads=1)
    train(cfg, tmp_path, progress=False)
    with pytest.raises(ValueError, match="different run.*seed.*steps"):
        train(replace(cfg, steps=4, seed=5), tmp_path, progress=False)
    train(replace(cfg, steps=2, checkpoint_every=1), tmp_path, progress=False)  # bookkeeping may change
    # Shortening or lengthening a run is allowed only when asked for, and recorded.
    result = train(replace(cfg, steps=3), tmp_path, progress=False, change_schedule=True)
    assert result["steps"] == 3
    assert result["schedule_changes"] == [{"at_step": 2, "steps_before": 2, "steps_after": 3}]
    with pytest.raises(ValueError, match="seed"):
        train(replace(cfg, steps=4, seed=5), tmp_path, progress=False, change_schedule=True)


def test_presets_are_what_the_issue_asks_for():
    """cpu-tiny is small and short; gpu-small uses bf16 and torch.compile (only where CUDA is present)."""
    tiny, gpu = PRESETS["cpu-tiny"], PRESETS["gpu-small"]
    assert tiny.steps * tiny.batch_size <= 2000 and not tiny.bf16
    assert gpu.bf16 and gpu.compile and gpu.model["dim"] > tiny.model["dim"]
