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
from labkit.train import (
    PRESETS,
    compute_loss,
    is_image_step,
    load_checkpoint,
    make_batch,
    make_image_batch,
    monitor,
    train,
)

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "labkit.train", "--preset", "smoke", "--device", "cpu", "--threads", "1",
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
    cfg = replace(PRESETS["smoke"], device="cpu")
    a, b, c = (make_batch(cfg, s, FAKE_RECOGNIZER, "cpu") for s in (3, 3, 4))
    assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["noise"], b["noise"])
    assert not torch.equal(a["frames"], c["frames"])
    assert a["frames"].shape == (2, 8, 3, 32, 32)
    # Given context frames are never part of the loss, and a cut is a shot start.
    assert not a["cuts"][:, 0].any()


def test_image_first_steps_are_single_frames_with_no_context():
    cfg = replace(PRESETS["smoke"], device="cpu", image_steps=4, p_image_batch=0.5)
    assert all(is_image_step(cfg, s) for s in range(4))
    later = [is_image_step(cfg, s) for s in range(4, 200)]
    assert 0.35 < sum(later) / len(later) < 0.65 and later == [is_image_step(cfg, s) for s in range(4, 200)]
    a, b = make_image_batch(cfg, 5, FAKE_RECOGNIZER, "cpu"), make_image_batch(cfg, 5, FAKE_RECOGNIZER, "cpu")
    assert a["frames"].shape == (cfg.image_batch_size, 1, 3, 32, 32) and torch.equal(a["frames"], b["frames"])
    assert not a["given"].any() and a["embeddings"].shape == (cfg.image_batch_size, cfg.num_refs, 512)
    model = IdentityVideoDiT(sample_size=32, max_frames=cfg.num_frames, **cfg.model)
    loss, terms = compute_loss(model, make_scheduler("ddpm"), a, cfg)
    assert torch.isfinite(loss) and terms["denoise"] > 0


def test_monitor_measures_token_spread_and_swap_sensitivity():
    from labkit.faces import FaceRecognitionBackbone

    encoder = FaceRecognitionBackbone()  # the tokens' recognizer; the monitor scores with the scoring one

    cfg = PRESETS["smoke"]
    torch.manual_seed(0)
    model = IdentityVideoDiT(sample_size=32, max_frames=cfg.num_frames, **cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    m = monitor(model, encoder, cfg, num_inference_steps=2)
    assert m["token_spread"] > 0.3 and m["swap_sensitivity"] > 0  # face-only tokens differ, and are read
    assert -1 < m["score"] < 1.5 and 0 <= m["top1"] <= 1 and m["samples"].shape == (8, 3, 32, 32)
    model.identity_encoder.to_tokens.weight.data.zero_()  # every face now gets the same tokens
    collapsed = monitor(model, encoder, cfg, num_inference_steps=2)
    assert collapsed["token_spread"] < 1e-4 and collapsed["swap_sensitivity"] < 1e-5


def test_training_lowers_the_loss_on_held_out_batches(tmp_path):
    """60 steps lower the denoising loss on fixed batches the run never saw, against the untrained model.

    (Per-step losses are too noisy over so few steps: each batch draws its own timesteps.)
    """
    cfg = replace(PRESETS["smoke"], steps=60, batch_size=4, lr=3e-3, device="cpu", checkpoint_every=60,
                  num_threads=1)
    result = train(cfg, tmp_path, progress=False)
    assert (tmp_path / "loss.png").exists() and (tmp_path / "model" / "config.json").exists()
    image_steps = sum(is_image_step(cfg, s) for s in range(60))
    assert len(result["losses"]) == 60 and 0 < image_steps < 60
    assert (result["image_steps"], result["clip_steps"]) == (image_steps, 60 - image_steps)
    assert result["clips_per_second"] is not None and result["images_per_second"] is not None
    held_out = replace(cfg, batch_size=16, seed=99)
    scheduler = make_scheduler("ddpm")
    untrained = IdentityVideoDiT(sample_size=cfg.size, max_frames=cfg.num_frames, **cfg.model)

    def loss(model):
        with torch.no_grad():
            return sum(compute_loss(model.eval(), scheduler, make_batch(held_out, s, FAKE_RECOGNIZER, "cpu"),
                                    held_out)[0].item() for s in range(2)) / 2

    assert loss(result["model"]) < 0.85 * loss(untrained)


def test_evaluate_draws_32_people_in_groups_of_8_and_prints_the_figures(tmp_path, capsys):
    """``--evaluate`` scores a model's references-only pictures: 4 groups x 8 people x 4 pictures."""
    from labkit.train import main
    from labkit.train_monitor import evaluate_references_only

    torch.manual_seed(0)
    model = IdentityVideoDiT(sample_size=32, max_frames=4, **PRESETS["smoke"].model)
    with torch.no_grad():  # an untrained model outputs 0; random weights draw noise
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(tmp_path / "model")
    e = evaluate_references_only(model, FAKE_RECOGNIZER, groups=2, per_person=2, num_inference_steps=2,
                                 progress=False)
    assert e["pictures"] == 32 and len(e["top1_per_group"]) == 2 and len(e["score_per_group"]) == 2
    assert all(v % 0.0625 == 0 for v in e["top1_per_group"])  # 16 pictures a group
    assert 0 <= e["face_probability"] <= 1 and e["score"] < 0.3  # noise is no one's face
    main(["--evaluate", str(tmp_path / "model"), "--device", "cpu", "--threads", "1", "--no-progress"])
    printed = capsys.readouterr().out
    assert "128 pictures of 32 held-out people: top-1 among 8" in printed and "face probability" in printed


def test_kill_9_then_resume_ends_with_the_same_weights(tmp_path):
    """An interrupted run, resumed, equals an uninterrupted run of the same seed, weight for weight."""
    # The uninterrupted run in this process, with the CLI's settings (one thread: the same float sums).
    train(replace(PRESETS["smoke"], steps=12, device="cpu", num_threads=1), tmp_path / "straight",
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


# The command line with its batches corrupted at one step (NaN frames, as a broken renderer would give), on
# one process (rank 0) only: every process must stop there all the same.
NAN_SCRIPT = """
import os, sys
import labkit.train as t

def corrupt(make):
    def wrapped(cfg, step, *args, **kw):
        batch = make(cfg, step, *args, **kw)
        if step == {step} and int(os.environ.get("RANK", "0")) == 0:
            batch["frames"] = batch["frames"] * float("nan")
        return batch
    return wrapped

t.make_batch, t.make_image_batch = corrupt(t.make_batch), corrupt(t.make_image_batch)
t.main(sys.argv[1:])
"""


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    script = tmp_path / "nan_at_7.py"
    script.write_text(NAN_SCRIPT.format(step=7))
    result = subprocess.run([sys.executable, str(script), *CLI[3:], "--out", str(tmp_path / "run"), "--steps", "12"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "loss is nan at step 7" in result.stdout
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 6
    assert not (tmp_path / "run" / "checkpoint.pt.tmp").exists()


def test_corrupt_training_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(tmp_path / "checkpoint.pt")


def test_resuming_with_other_settings_is_refused(tmp_path):
    """A checkpoint of one run is never silently continued with another model, seed or schedule."""
    cfg = replace(PRESETS["smoke"], steps=2, checkpoint_every=2, device="cpu", num_threads=1)
    train(cfg, tmp_path, progress=False)
    with pytest.raises(ValueError, match="different run.*seed.*steps"):
        train(replace(cfg, steps=4, seed=5), tmp_path, progress=False)
    train(replace(cfg, steps=2, checkpoint_every=1), tmp_path, progress=False)  # bookkeeping may change
    # Shortening or lengthening a run is allowed only when asked for, and recorded.
    result = train(replace(cfg, steps=3), tmp_path, progress=False, change_schedule=True)
    assert result["steps"] == 3
    assert result["schedule_changes"] == [{"at_step": 2, "steps_before": 2, "image_steps_before": 4,
                                           "steps_after": 3, "image_steps_after": 4}]
    result = train(replace(cfg, steps=4, image_steps=1), tmp_path, progress=False, change_schedule=True)
    assert result["schedule_changes"][-1] == {"at_step": 3, "steps_before": 3, "image_steps_before": 4,
                                              "steps_after": 4, "image_steps_after": 1}
    with pytest.raises(ValueError, match="seed"):
        train(replace(cfg, steps=4, seed=5), tmp_path, progress=False, change_schedule=True)


def test_cpu_tiny_is_small_and_gpu_small_uses_bf16_and_compile():
    """cpu-tiny is small and short; gpu-small uses bf16 and torch.compile (only where CUDA is present)."""
    tiny, gpu = PRESETS["cpu-tiny"], PRESETS["gpu-small"]
    assert tiny.steps * tiny.batch_size <= 2000 and not tiny.bf16
    assert gpu.bf16 and gpu.compile and gpu.model["dim"] > tiny.model["dim"]


class _TouchOnLoad:
    """A pickled object whose unpickling calls ``Path.touch(marker)``: code run by merely loading a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_needs_code_to_load_is_refused_and_nothing_runs(tmp_path, capsys):
    """load_checkpoint reads with weights_only=True: a pickled object is refused, its code never runs."""
    from dataclasses import asdict

    from labkit.train import main

    cfg = replace(PRESETS["smoke"], device="cpu", num_threads=1)
    out, marker = tmp_path / "run", tmp_path / "pwned"
    out.mkdir()
    ckpt = out / "checkpoint.pt"
    torch.save({"model": {}, "optimizer": {}, "lr_scheduler": _TouchOnLoad(marker), "step": 3, "losses": [],
                "config": asdict(cfg)}, ckpt)
    with pytest.raises(ValueError, match="needs arbitrary code to load and is refused") as err:
        load_checkpoint(ckpt)
    assert str(ckpt) in str(err.value)
    with pytest.raises(ValueError, match="arbitrary code"):
        train(cfg, out, progress=False)
    with pytest.raises(SystemExit) as exit_:
        main(["--preset", "smoke", "--device", "cpu", "--threads", "1", "--no-progress", "--out", str(out)])
    assert exit_.value.code == 2 and "arbitrary code" in capsys.readouterr().out
    assert not marker.exists(), "loading the checkpoint ran code from it"
    # The payload is live: an unrestricted load would have run it.
    torch.load(ckpt, weights_only=False)
    assert marker.exists()


def test_checkpoints_hold_only_tensors_and_plain_values(tmp_path):
    """What train() writes loads with weights_only=True; NumPy values are stored as plain numbers/tensors."""
    import numpy as np

    from labkit.checkpoints import save_atomic as _save_atomic

    cfg = replace(PRESETS["smoke"], steps=2, checkpoint_every=2, device="cpu", num_threads=1)
    train(cfg, tmp_path, progress=False)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    plain = (dict, list, tuple, int, float, str, bool, type(None), torch.Tensor)

    def walk(x):
        assert isinstance(x, plain), type(x)
        for v in (x.values() if isinstance(x, dict) else x if isinstance(x, (list, tuple)) else []):
            walk(v)

    walk(state)
    assert state["step"] == 2 and state["optimizer"]["state"] and state["lr_scheduler"]["last_epoch"] == 2
    _save_atomic({**state, "losses": [(1, np.float32(0.5))], "extra": np.arange(3)}, tmp_path / "np.pt")
    again = load_checkpoint(tmp_path / "np.pt")
    assert type(again["losses"][0][1]) is float and torch.equal(again["extra"], torch.arange(3))
    with pytest.raises(TypeError, match=r"checkpoint\['extra'\] is a .*object"):
        _save_atomic({**state, "extra": object()}, tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()
