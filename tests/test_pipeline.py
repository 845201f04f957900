"""denoise_step and ReferenceConditionedGenerator: determinism, drift, strategies, chunks, clear errors."""

import logging

import pytest
import torch
from torch import nn

from labkit.model import IdentityVideoDiT
from labkit.pipeline import (
    STRATEGIES,
    ReferenceConditionedGenerator,
    centred_face_masks,
    denoise_step,
    has_face,
    make_scheduler,
)


class FakeRecognizer(nn.Module):
    """A fixed random projection to 512-d unit vectors: fast, and different faces give different vectors."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.proj = nn.Linear(3 * 8 * 8, 512)

    def forward(self, images):
        small = nn.functional.interpolate(images, size=(8, 8), mode="area")
        return nn.functional.normalize(self.proj(small.flatten(1)), dim=-1)


def face_like(n=3, size=32, seed=0):
    """n rendered pictures of one held-out person: they pass the face check."""
    from labkit.synthfaces import render_faces, test_ids

    return render_faces(test_ids(1).repeat(n), size, torch.Generator().manual_seed(seed))[0]


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    model = IdentityVideoDiT(sample_size=16, max_frames=4, dim=32, depth=1, num_heads=2, identity_dim=32,
                             num_identity_tokens=4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return ReferenceConditionedGenerator(model.eval(), make_scheduler("ddim"), recognizer=FakeRecognizer())


def gen(pipe, seed=0, **kw):
    args = dict(reference_images=face_like(), num_frames=6, num_inference_steps=3, progress=False)
    args.update(kw)
    return pipe.generate(generator=torch.Generator().manual_seed(seed), **args)


def test_denoise_step_ddpm_is_stochastic_ddim_is_not():
    model = lambda x, t: 0.1 * x
    x = torch.randn(1, 2, 3, 4, 4)
    ddpm, ddim = make_scheduler("ddpm"), make_scheduler("ddim")
    ddpm.set_timesteps(10)
    ddim.set_timesteps(10)
    t = ddpm.timesteps[0]
    a = denoise_step(x, model, t, ddpm, generator=torch.Generator().manual_seed(1))
    b = denoise_step(x, model, t, ddpm, generator=torch.Generator().manual_seed(2))
    assert (a - b).abs().mean() > 1e-3
    t = ddim.timesteps[0]
    assert torch.equal(denoise_step(x, model, t, ddim), denoise_step(x, model, t, ddim))


def test_same_seed_same_video_other_seed_differs(pipe):
    a, b, c = gen(pipe, 0).frames, gen(pipe, 0).frames, gen(pipe, 1).frames
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 1e-3


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_makes_a_long_chunked_video_with_cuts(pipe, strategy):
    out = gen(pipe, strategy=strategy, num_frames=20)
    assert out.frames.shape == (1, 20, 3, 16, 16)
    assert out.frames.min() >= -1 and out.frames.max() <= 1
    assert len(out.chunk_starts) >= 8
    assert out.cuts[0, out.chunk_starts[1:]].all() and not out.cuts[0, 0]


def test_strategies_and_strength_change_the_video(pipe):
    implicit, explicit = gen(pipe, strategy="implicit").frames, gen(pipe, strategy="explicit").frames
    assert (implicit - explicit).abs().mean() > 1e-3
    zero = gen(pipe, strategy="explicit", identity_strength=0.0).frames
    assert torch.allclose(zero, implicit, atol=1e-5)


def test_identity_kwargs_reach_the_model_without_warnings(pipe, caplog):
    with caplog.at_level(logging.WARNING):
        gen(pipe, strategy="face_aware", identity_guidance=2.0)
    assert not [r for r in caplog.records if "ignored" in r.getMessage()]


def test_clear_errors(pipe):
    with pytest.raises(ValueError, match="unknown strategy 'sora'"):
        gen(pipe, strategy="sora")
    with pytest.raises(ValueError, match="beyond what the model makes in one call"):
        gen(pipe, num_frames=10, chunking=False)
    with pytest.raises(ValueError, match=r"no face in reference image\(s\) \[0, 1\]"):
        gen(pipe, reference_images=torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\(R, 3, H, W\)"):
        gen(pipe, reference_images=torch.zeros(3, 32))


@pytest.mark.parametrize("strategy", ["implicit", "keyframe"])
def test_references_only_generation_needs_identity_tokens(pipe, strategy):
    with pytest.raises(ValueError, match=f"strategy '{strategy}' needs a first frame"):
        gen(pipe, strategy=strategy, keyframe=False)


@pytest.mark.parametrize("strategy", ["explicit", "face_aware"])
def test_references_only_generation_starts_from_pure_noise_with_no_given_frame(pipe, strategy):
    seen = []
    hook = pipe.model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs.get("context_mask")),
                                                with_kwargs=True)
    try:
        out = gen(pipe, strategy=strategy, keyframe=False, num_frames=4, chunking=False)
    finally:
        hook.remove()
    assert out.frames.shape == (1, 4, 3, 16, 16)
    assert all(not bool(m.any()) for m in seen if m is not None)  # no frame was ever given as context
    first = gen(pipe, strategy=strategy, keyframe=False, num_frames=4, chunking=False).frames
    other_refs = gen(pipe, strategy=strategy, keyframe=False, num_frames=4, chunking=False,
                     reference_images=face_like(seed=1) * 0 + face_like(n=3, seed=5).flip(-1)).frames
    assert torch.equal(out.frames, first) and not torch.equal(out.frames, other_refs)


def test_face_check_accepts_faces_and_rejects_blank_and_noise():
    assert has_face(face_like(2)).all()
    assert not has_face(torch.full((1, 3, 32, 32), 0.3)).any()
    assert not has_face(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1).any()


def test_centred_layout_is_a_centred_blob():
    m = centred_face_masks(3, 32)
    assert m.shape == (3, 32, 32) and m[:, 16, 16].eq(1).all() and m[:, 0, 0].eq(0).all()


def test_init_strength_starts_chunks_from_the_last_given_frame(pipe):
    """Below 1, each chunk starts from its last given frame noised part-way (SDEdit): fewer model calls."""
    calls = []
    hook = pipe.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        gen(pipe, num_frames=3, num_inference_steps=10, init_strength=1.0)
        full = len(calls)
        calls.clear()
        partial = gen(pipe, num_frames=3, num_inference_steps=10, init_strength=0.5)
    finally:
        hook.remove()
    assert full == 10 and 0 < len(calls) <= 5
    from_noise = gen(pipe, num_frames=3, num_inference_steps=10, init_strength=1.0)
    assert (partial.frames - from_noise.frames).abs().mean() > 1e-3
    with pytest.raises(ValueError, match="init_strength"):
        gen(pipe, init_strength=0.0)


def test_precomputed_tokens_and_region_routing_for_two_characters(pipe):
    """Two characters' tokens one after the other; routing each face region to its own tokens changes the video."""
    tokens = torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(0))
    owner = torch.arange(2).repeat_interleave(4)
    masks = torch.zeros(1, 6, 2, 16, 16)
    masks[:, :, 0, :, :8], masks[:, :, 1, :, 8:] = 1.0, 1.0
    common = dict(strategy="face_aware", identity_tokens=tokens, face_masks=masks.amax(2), token_character=owner)
    free, routed = gen(pipe, **common).frames, gen(pipe, character_masks=masks, **common).frames
    assert free.shape == routed.shape == (1, 6, 3, 16, 16)
    assert (free - routed).abs().mean() > 1e-4
    with pytest.raises(ValueError, match="identity_tokens must be"):
        gen(pipe, strategy="explicit", identity_tokens=tokens[0])


def test_generate_is_denoise_step_over_a_chunk_plan(pipe, monkeypatch):
    """Every denoising step of generate() is the course's denoise_step, once per step of every planned chunk."""
    import labkit.pipeline as pl

    plan = pl.plan_chunks(20, 4, context_frames=2)
    assert [c.num_given for c in plan] == [1] + [2] * (len(plan) - 1)
    assert sum(c.num_new for c in plan) == 20 and [c.start for c in plan] == gen(pipe, num_frames=20).chunk_starts
    calls = []
    real = pl.denoise_step
    monkeypatch.setattr(pl, "denoise_step", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    gen(pipe, num_frames=20)
    assert len(calls) == 3 * len(plan) and all(s is pipe.scheduler for s in calls)


def test_callback_on_step_end_sees_every_step_and_can_replace_or_stop(pipe):
    seen = []

    def record(p, step, t, kwargs):
        seen.append((step, p.num_timesteps, kwargs["latents"].shape))
        return kwargs

    plain = gen(pipe, num_frames=6).frames
    assert torch.equal(gen(pipe, num_frames=6, callback_on_step_end=record).frames, plain), "a no-op callback"
    assert [s for s, _, _ in seen] == list(range(seen[0][1])) and seen[0][1] == 3 * len(gen(pipe).chunk_starts)

    class Stop(Exception):
        pass

    def stop(p, step, t, kwargs):
        raise Stop

    with pytest.raises(Stop):
        gen(pipe, callback_on_step_end=stop)
    to_zero = lambda p, s, t, k: {"latents": torch.zeros_like(k["latents"])}
    zeroed = gen(pipe, num_frames=3, callback_on_step_end=to_zero)
    assert torch.equal(zeroed.frames, torch.zeros_like(zeroed.frames)), "a returned latents replaces the sample"
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        gen(pipe, callback_on_step_end=record, callback_on_step_end_tensor_inputs=["noise"])


def test_the_recognizer_is_a_registered_component(pipe):
    assert set(pipe.components) == {"model", "scheduler", "recognizer"}
    assert pipe.recognizer is pipe.components["recognizer"]
