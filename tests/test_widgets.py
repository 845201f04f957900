"""The drift lab stays responsive and never shows a traceback: cache, latest-only worker, input checks.

Most tests drive :class:`labkit.widgets.DriftLab` with a small fake compute function (so they run in a few
seconds and test the machinery, not the model). The last ones run the real compute function,
:class:`labkit.widgets.DriftEngine`, on a small randomly initialised video model saved to a temporary folder:
they test the plumbing (shapes, progress, cancellation, a missing model), not the quality of what it draws.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from labkit.widgets import DriftLab, DriftResult, DriftSettings, LatestWorker, ResultCache, validate_settings


class FakeCompute:
    """``(settings, progress) -> DriftResult`` whose curve encodes the setting; counts calls; can be slowed."""

    def __init__(self, steps: int = 5, step_seconds: float = 0.0):
        self.steps, self.step_seconds = steps, step_seconds
        self.calls: list[DriftSettings] = []
        self.started = threading.Event()

    def __call__(self, settings: DriftSettings, progress) -> DriftResult:
        self.calls.append(settings)
        self.started.set()
        for i in range(self.steps):
            time.sleep(self.step_seconds)
            progress((i + 1) / self.steps, f"step {i + 1}")
        frames = settings.num_chunks * 4
        level = settings.identity_strength / 1.5
        rng = np.random.default_rng(settings.seed)
        return DriftResult(
            settings=settings,
            frames=rng.integers(0, 255, (frames, 8, 8, 3), dtype=np.uint8),
            references=rng.integers(0, 255, (settings.num_references, 8, 8, 3), dtype=np.uint8),
            normalised=np.full(frames, level, np.float32),
            cuts=list(range(4, frames, 4)),
            frame_xy=rng.normal(size=(frames, 2)), reference_xy=rng.normal(size=(settings.num_references, 2)),
            others_xy=rng.normal(size=(5, 2)),
            figures={"mean": level, "first_chunk": level, "last_chunk": level, "drift": 0.0,
                     "face_quality": 1.0, "variety": 0.1},
        )


def _lab(fake, **kw):
    return DriftLab(compute=fake, precomputed=False, **kw)


def test_cached_setting_comes_back_without_recomputing():
    fake = FakeCompute()
    lab = _lab(fake)
    lab.wait(10)
    lab.set(identity_strength=0.5)
    lab.wait(10)
    assert len(fake.calls) == 2
    start = time.perf_counter()
    assert lab.request(DriftSettings(identity_strength=0.8)) == "cache"
    took = time.perf_counter() - start
    lab.wait(10)
    assert len(fake.calls) == 2, "a setting already computed must not be computed again"
    assert lab.shown.settings.identity_strength == 0.8
    assert lab.history[-1][0] == "cache" and took < 1.0
    assert "driftlab-mean" in lab.figures_view.value
    assert lab.views(lab.shown) is lab.views(lab.shown), "a result's views are drawn once, then kept"
    assert lab.curve_view.value == lab.views(lab.shown)["curve"]
    lab.close()


def test_result_finishing_after_the_settings_changed_is_dropped_not_shown():
    fake = FakeCompute(steps=0)
    gate = threading.Event()
    slow_settings = DriftSettings(identity_strength=1.0)

    def compute(settings, progress):
        if settings == slow_settings:
            gate.wait(10)  # no progress checkpoint while waiting: the result arrives after the change
        return fake(settings, progress)

    shown = []
    worker = LatestWorker(compute, on_result=lambda r, s, t: shown.append(r.settings))
    worker.request(slow_settings)
    time.sleep(0.2)
    worker.request(DriftSettings(identity_strength=0.3))
    gate.set()
    assert worker.wait_idle(10)
    assert shown == [DriftSettings(identity_strength=0.3)], "the stale result must never reach the view"
    assert worker.stats["dropped"] == 1
    assert slow_settings in worker.cache, "a finished stale result is still worth caching"
    worker.close()


def test_a_newer_request_cancels_the_running_computation_at_its_next_checkpoint():
    fake = FakeCompute(steps=50, step_seconds=0.02)
    shown = []
    worker = LatestWorker(fake, on_result=lambda r, s, t: shown.append(r.settings))
    worker.request(DriftSettings(seed=1))
    assert fake.started.wait(5)
    worker.request(DriftSettings(seed=2))
    assert worker.wait_idle(10)
    assert worker.stats["cancelled"] == 1
    assert shown == [DriftSettings(seed=2)]
    worker.close()


@pytest.mark.parametrize("bad, expect", [
    ({"num_references": 0}, "number of references must be 1..5, got 0"),
    ({"num_references": -3}, "got -3"),
    ({"identity": 99}, "held-out identity must be 0..19, got 99"),
    ({"identity": -1}, "got -1"),
    ({"strategy": "magic"}, "strategy must be one of"),
])
def test_bad_input_gives_a_visible_message_and_keeps_the_last_result(bad, expect):
    fake = FakeCompute()
    lab = _lab(fake)
    lab.wait(10)
    before = lab.shown
    if "strategy" in bad:  # a Dropdown refuses unknown values, so this reaches the lab from code
        assert lab.request(DriftSettings(**bad)) == "invalid"
    else:
        lab.set(**bad)
    lab.wait(10)
    assert expect in lab.message.value
    assert "driftlab-message" in lab.message.value
    assert lab.shown is before and len(fake.calls) == 1
    lab.set(num_references=3, identity=0)
    assert lab.message.value.count("must") == 0, "fixing the input clears the message"
    lab.close()


def test_identity_strength_out_of_range_is_refused_with_a_message_not_clipped():
    settings, messages = validate_settings(DriftSettings(identity_strength=5.0))
    assert settings is None and messages == ["identity_strength must be 0..1.5, got 5"]
    assert validate_settings(DriftSettings(identity_strength=-0.1))[0] is None
    assert validate_settings(DriftSettings(identity_strength=float("nan")))[0] is None
    assert validate_settings(DriftSettings(identity_strength=1.5))[0].identity_strength == 1.5


def test_typing_5_into_the_strength_box_is_refused_visibly_and_the_slider_stays():
    """A slider's own readout would clamp a typed 5 to 1.5 in the browser, silently; the lab's strength box
    takes any number and refuses one out of range with a red message naming the range."""
    fake = FakeCompute()
    lab = _lab(fake)
    lab.wait(10)
    before, slider = lab.shown, lab.controls["identity_strength"]
    assert slider.readout is False, "the slider's own readout would clamp silently"
    lab.strength_box.value = 5.0
    lab.wait(10)
    assert "identity_strength must be 0..1.5, got 5" in lab.message.value
    assert "#b00020" in lab.message.value and "slider stays at 0.8" in lab.message.value
    assert slider.value == 0.8 and lab.shown is before and len(fake.calls) == 1
    assert "not computed" in lab.status.value
    lab.set(identity_strength=7)  # from code: the same refusal, not a clamp
    assert "got 7" in lab.message.value and slider.value == 0.8
    lab.strength_box.value = 0.5  # in range: moves the slider, computes, clears the message
    lab.wait(10)
    assert slider.value == 0.5 and lab.shown.settings.identity_strength == 0.5
    assert "must" not in lab.message.value
    calls = len(fake.calls)
    slider.value = 1.0  # and the box follows the slider, without asking for the same setting twice
    lab.wait(10)
    assert lab.strength_box.value == 1.0 and lab.shown.settings.identity_strength == 1.0
    assert len(fake.calls) == calls + 1 and lab.worker.stats["cancelled"] == 0
    lab.strength_box.value = 9.0
    lab.strength_box.value = 1.0  # typed back to the slider's own value: the message goes
    assert "must" not in lab.message.value
    lab.close()


def test_a_failing_computation_shows_a_message_and_the_lab_keeps_working():
    fake = FakeCompute()

    def compute(settings, progress):
        if settings.seed == 13:
            raise RuntimeError("out of memory")
        return fake(settings, progress)

    lab = _lab(compute)
    lab.wait(10)
    lab.set(seed=13)
    lab.wait(10)
    assert "generation failed: RuntimeError: out of memory" in lab.message.value
    lab.set(seed=14)
    lab.wait(10)
    assert lab.shown.settings.seed == 14
    lab.close()


def test_dragging_sliders_quickly_and_switching_strategy_mid_generation_ends_in_the_latest_setting():
    fake = FakeCompute(steps=10, step_seconds=0.01)
    lab = _lab(fake)
    for i in range(31):  # a drag: every intermediate value fires, faster than the fake can compute
        lab.controls["identity_strength"].value = round(0.05 * i, 2)
        if i % 10 == 5:
            lab.controls["strategy"].value = ["implicit", "keyframe", "explicit"][i // 10]
    lab.set(strategy="face_aware", identity_strength=0.75)
    lab.wait(20)
    assert lab.shown.settings == DriftSettings(identity_strength=0.75, strategy="face_aware")
    assert "driftlab-mean" in lab.figures_view.value and "0.500" in lab.figures_view.value
    assert len(fake.calls) < 20, f"stale settings should be skipped, computed {len(fake.calls)}"
    assert lab.worker.stats["errors"] == 0
    lab.close()


def test_cache_is_bounded_and_evicts_the_least_recently_used():
    fake = FakeCompute(steps=0)
    cache = ResultCache(max_items=2)
    a, b, c = (fake(DriftSettings(seed=i), lambda *a: None) for i in range(3))
    cache.put(a)
    cache.put(b)
    cache.get(a.settings)
    cache.put(c)
    assert a.settings in cache and c.settings in cache and b.settings not in cache


def test_without_a_trained_model_the_lab_says_so_instead_of_hanging(tmp_path):
    """The real compute function on a missing model folder: a message naming the folder and what to do, fast."""
    lab = DriftLab(model_path=tmp_path / "no_model_here")
    start = time.perf_counter()
    assert lab.wait(30) is None, "nothing can be shown without a model"
    assert time.perf_counter() - start < 30
    assert "No trained video model at" in lab.message.value and "no_model_here" in lab.message.value
    assert "notebook 08" in lab.message.value and "Traceback" not in lab.message.value
    assert "failed" in lab.status.value
    lab.set(identity_strength=0.5)  # moving a control again asks again, and says the same, without an error
    lab.wait(30)
    assert "No trained video model" in lab.message.value and lab.worker.stats["computed"] == 0
    lab.close()


def test_a_precomputed_sweep_is_used_only_with_the_model_and_scorer_that_made_it(tmp_path):
    from labkit.drift import scorer_fingerprint
    from labkit.widgets import INFERENCE_STEPS, load_precomputed, model_fingerprint, save_results

    model = tmp_path / "model"
    model.mkdir()
    (model / "diffusion_pytorch_model.safetensors").write_bytes(b"weights of one model")
    fake = FakeCompute(steps=0)
    results = [fake(DriftSettings(identity_strength=s), lambda *a: None) for s in (0.5, 0.8)]
    sweep = tmp_path / "sweep.npz"
    meta = {"steps": INFERENCE_STEPS, "model_sha256": model_fingerprint(model), "scorer_sha256": scorer_fingerprint()}
    save_results(results, tmp_path / "other_scorer.npz", meta={**meta, "scorer_sha256": "another recognizer"})
    assert load_precomputed(ResultCache(), tmp_path / "other_scorer.npz", model_path=model) == 0
    save_results(results, sweep, meta=meta)
    cache = ResultCache()
    assert load_precomputed(cache, sweep, model_path=model) == 2
    assert cache.get(DriftSettings(identity_strength=0.5))[1] == "precomputed"
    (model / "diffusion_pytorch_model.safetensors").write_bytes(b"weights of a retrained model")
    assert load_precomputed(ResultCache(), sweep, model_path=model) == 0, "a stale sweep must not be shown"
    assert load_precomputed(ResultCache(), tmp_path / "missing.npz", model_path=model) == 0


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    """An untrained IdentityVideoDiT at the lab's size, saved like the shipped one."""
    import torch

    from labkit.model import IdentityVideoDiT

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    IdentityVideoDiT(sample_size=32, max_frames=8, dim=32, depth=1, num_heads=2, identity_dim=32,
                     num_identity_tokens=4).save_pretrained(folder)
    return folder


def test_the_real_engine_measures_a_setting_reports_progress_and_can_be_cancelled(random_model):
    from labkit.pipeline import frames_for_chunks
    from labkit.widgets import Cancelled, DriftEngine

    engine = DriftEngine(model_path=random_model, steps=4)
    seen = []
    result = engine(DriftSettings(num_chunks=2, num_references=2, reference_quality="noisy"),
                    lambda f, m="": seen.append(f))
    frames = frames_for_chunks(2)
    assert result.frames.shape == (frames, 32, 32, 3) and result.references.shape == (2, 32, 32, 3)
    assert result.normalised.shape == (frames,) and result.frame_xy.shape == (frames, 2)
    assert result.cuts == [frames_for_chunks(1)], "the second chunk starts after the first chunk's frames"
    assert all(np.isfinite(v) for v in result.figures.values())
    assert seen and seen[-1] == pytest.approx(1.0), f"progress must end at 1, got {seen[-3:]}"

    def cancel(fraction, message=""):
        if fraction > 0.3:
            raise Cancelled

    with pytest.raises(Cancelled):
        engine(DriftSettings(strategy="keyframe", num_chunks=2), cancel)
    again = engine(DriftSettings(num_chunks=2, num_references=2, reference_quality="noisy"))
    assert np.array_equal(again.frames, result.frames), "same setting, same seed: same video after a cancel"


def test_a_lab_on_the_real_engine_switching_strategy_mid_generation_shows_the_last_one(random_model):
    from labkit.widgets import make_compute

    lab = DriftLab(compute=make_compute(random_model), precomputed=False)
    lab.set(strategy="explicit", num_chunks=3)
    time.sleep(0.3)  # mid-generation
    lab.set(strategy="keyframe")
    lab.wait(120)
    assert lab.shown.settings == DriftSettings(strategy="keyframe", num_chunks=3)
    assert lab.worker.stats["errors"] == 0 and "driftlab-mean" in lab.figures_view.value
    lab.close()


def test_precompute_writes_a_sweep_that_the_lab_loads_for_the_same_model(random_model, tmp_path):
    from labkit.widgets import STRATEGIES, load_precomputed, precompute, sweep_settings

    assert len(sweep_settings()) == 4 * 16, "every strategy at identity_strength 0, 0.1, ..., 1.5"
    path = tmp_path / "sweep.npz"
    made = precompute(path, strengths=[0.5], model_path=random_model)
    assert [r.settings.strategy for r in made] == list(STRATEGIES)
    lab = DriftLab(model_path=random_model, autostart=False)
    assert load_precomputed(lab.cache, path, model_path=random_model) == len(STRATEGIES)
    assert lab.request(DriftSettings(identity_strength=0.5, strategy="keyframe")) == "cache"
    assert lab.history[-1][0] == "precomputed"
    lab.close()


def test_the_worker_draws_precomputed_views_in_the_background_so_showing_one_costs_no_drawing():
    fake = FakeCompute(steps=0)
    cache = ResultCache()
    sweep = [fake(DriftSettings(identity_strength=s / 10), lambda *a: None) for s in range(8)]
    for r in sweep:
        cache.put(r, "precomputed")
    lab = DriftLab(compute=fake, precomputed=False, cache=cache, autostart=False)
    deadline = time.perf_counter() + 30
    while len(lab._views) < len(sweep) and time.perf_counter() < deadline:
        time.sleep(0.05)
    assert len(lab._views) == len(sweep), "every precomputed result gets its views while the lab is idle"
    drawn = lab.views(sweep[3])
    assert lab.request(DriftSettings(identity_strength=0.3)) == "cache"
    assert bytes(lab.curve_view.value) == drawn["curve"] and lab.views(sweep[3]) is drawn, "shown as drawn"
    assert len(fake.calls) == len(sweep), "nothing was computed by the lab"
    lab.close()
