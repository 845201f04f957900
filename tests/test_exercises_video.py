"""Checkers of notebooks 01, 06 and 08 accept labkit's own answers and reject plausible wrong ones."""

import pytest
import torch

from labkit.exercises import check
from labkit.metrics import reference_embedding
from labkit.pipeline import denoise_step


def test_denoise_step_checker_accepts_labkit():
    assert check("denoise_step", denoise_step, verbose=False)


def _no_generator(x_t, model, t, scheduler, generator=None, model_kwargs=None):
    return denoise_step(x_t, model, t, scheduler, generator=None, model_kwargs=model_kwargs)


def _pred_original(x_t, model, t, scheduler, generator=None, model_kwargs=None):
    out = model(x_t, t, **(model_kwargs or {}))
    return scheduler.step(out.sample, t, x_t, generator=generator).pred_original_sample


def _drops_kwargs(x_t, model, t, scheduler, generator=None, model_kwargs=None):
    return denoise_step(x_t, model, t, scheduler, generator=generator)


def _euler_by_hand(x_t, model, t, scheduler, generator=None, model_kwargs=None):
    return x_t - 0.1 * model(x_t, t, **(model_kwargs or {})).sample


@pytest.mark.parametrize("wrong", [_no_generator, _pred_original, _drops_kwargs, _euler_by_hand])
def test_denoise_step_checker_rejects_wrong_steps(wrong):
    assert not check("denoise_step", wrong, verbose=False)


def test_mean_reference_checker_accepts_labkit():
    def labkit_version(e):
        return reference_embedding(e) if e.ndim == 3 else reference_embedding(e[None])[0]

    assert check("mean_reference_embedding", labkit_version, verbose=False)


@pytest.mark.parametrize("wrong", [
    lambda e: e.mean(dim=-2),  # not re-normalised
    lambda e: e.mean(dim=-1),  # averages the wrong axis
    lambda e: torch.nn.functional.normalize(e.sum(dim=0), dim=-1),  # batch axis for (B, R, D)
    lambda e: e[..., 0, :],  # first reference only
])
def test_mean_reference_checker_rejects_wrong_means(wrong):
    assert not check("mean_reference_embedding", wrong, verbose=False)


def _v(x0, noise, ab, t):
    a = ab[t].reshape(-1, *[1] * (x0.ndim - 1))
    return a.sqrt() * noise - (1 - a).sqrt() * x0


def test_v_target_checker_accepts_labkit_and_a_correct_hand_version():
    from labkit.pipeline import make_scheduler

    scheduler = make_scheduler("ddpm")
    assert check("v_target", lambda x0, noise, ab, t: scheduler.get_velocity(x0, noise, t), verbose=False)
    assert check("v_target", _v, verbose=False)


@pytest.mark.parametrize("wrong", [
    lambda x0, noise, ab, t: noise,  # epsilon target
    lambda x0, noise, ab, t: _v(noise, x0, ab, t),  # x0 and noise swapped
    lambda x0, noise, ab, t: ab[t].reshape(-1, *[1] * (x0.ndim - 1)) * noise
    - (1 - ab[t].reshape(-1, *[1] * (x0.ndim - 1))) * x0,  # no square roots
    lambda x0, noise, ab, t: ab[t].mean().sqrt() * noise - (1 - ab[t].mean()).sqrt() * x0,  # one alpha for all
])
def test_v_target_checker_rejects_wrong_targets(wrong):
    assert not check("v_target", wrong, verbose=False)
