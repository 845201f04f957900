"""The benchmark commands: video lengths in chunks, degraded references, the speed figures."""

import math

import pytest
import torch

from labkit.bench import degrade, frames_for_chunks, speed
from labkit.pipeline import ReferenceConditionedGenerator
from labkit.train import PRESETS


def test_frames_for_chunks_gives_exactly_that_many_generator_chunks():
    for n in (1, 3, 8):
        frames = frames_for_chunks(n, max_frames=8, context_frames=2)
        assert ReferenceConditionedGenerator._count_chunks(frames, 8, 2) == n
        assert ReferenceConditionedGenerator._count_chunks(frames + 1, 8, 2) == n + 1


def test_degrade_blurs_and_noises_within_range():
    images = torch.rand(2, 3, 3, 16, 16) * 2 - 1
    assert torch.equal(degrade(images, 0.0, 0.0), images)
    blurred, noisy = degrade(images, 0.0, 1.0), degrade(images, 0.5, 0.0, seed=1)
    assert blurred.shape == noisy.shape == images.shape
    assert blurred.diff(dim=-1).abs().mean() < images.diff(dim=-1).abs().mean()  # smoother
    assert noisy.min() >= -1 and noisy.max() <= 1 and not torch.equal(noisy, images)


def test_speed_reports_training_and_sampling_figures_on_the_cpu():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = speed("cpu", steps=1, preset="smoke")
    finally:
        torch.set_num_threads(threads)
    assert r["device"] == "cpu" and r["preset"] == "smoke" and r["threads"] == 1 and "mfu_bf16" not in r
    cfg = PRESETS["smoke"]  # each rate is the preset's batch over the measured step
    assert r["train_clips_per_s"] * r["train_step_s"] == pytest.approx(cfg.batch_size)
    assert r["train_images_per_s"] * r["train_image_step_s"] == pytest.approx(cfg.image_batch_size)
    assert all(math.isfinite(r[f"sample_s_per_16_frames_init_{s}"]) for s in (1.0, 0.7))
    assert r["sample_chunks_per_16_frames"] == 3, "16 frames take 3 chunks of an 8-frame model"


def test_the_benchmark_and_the_drift_lab_share_one_engine_and_one_table_of_degradations():
    from labkit.bench import DEGRADATIONS, Bench
    from labkit.drift import DriftEngine
    from labkit.widgets import REFERENCE_QUALITIES, STRATEGIES

    assert issubclass(Bench, DriftEngine)
    assert list(REFERENCE_QUALITIES.values()) == list(DEGRADATIONS.values()), "the lab's names for the same numbers"
    from labkit.pipeline import STRATEGIES as PIPELINE_STRATEGIES

    assert STRATEGIES is PIPELINE_STRATEGIES
