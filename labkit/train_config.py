"""What defines a training run: :class:`TrainConfig` and the named :data:`PRESETS`.

A checkpoint records its run's config; resuming compares them (``labkit.checkpoints.check_same_run``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["TrainConfig", "PRESETS"]


@dataclass
class TrainConfig:
    """Everything that defines a run. ``model`` holds IdentityVideoDiT's constructor arguments."""

    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    warmup: int = 50
    weight_decay: float = 0.0
    num_frames: int = 8
    size: int = 32
    num_refs: int = 3
    model: dict = field(default_factory=lambda: dict(dim=96, depth=4, num_heads=4, identity_dim=96,
                                                     num_identity_tokens=8))
    p_drop_identity: float = 0.3  # no identity tokens: the implicit/keyframe strategies and guidance
    p_face_masks: float = 0.5  # identity attention limited to the true face masks (face_aware)
    # How the context frames are chosen: none, keyframe (frame 0 = a reference), continuation (first k frames
    # of the clip), keyframe + continuation. Probabilities, in that order.
    context_probs: tuple = (0.15, 0.3, 0.35, 0.2)
    p_cut_after_context: float = 0.6
    # Context frames are corrupted for some clips (noise, colour shift), as generated context will be: the
    # model learns to take identity from the tokens when the context has drifted (cf. SVD's noise_aug).
    p_context_aug: float = 0.5
    context_noise: float = 0.2
    context_colour_shift: float = 0.25
    identity_loss_weight: float = 0.0
    identity_loss_max_t: int = 400
    # Image-first co-training: single frames (no context) in batches of image_batch_size.
    image_batch_size: int = 32
    image_steps: int = 0  # the first steps are all single-frame steps
    p_image_batch: float = 0.0  # after them, this share of steps is still single frames
    p_drop_identity_images: float = 0.1
    monitor_every: int = 0
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    device: str | None = None
    bf16: bool = False  # Accelerate's bf16 mixed precision, on GPUs only (slower than fp32 on the CPUs we measured)
    compile: bool = False  # torch.compile through Accelerate's dynamo backend, on CUDA only
    grad_accum: int = 1  # micro-batches per optimizer step; the global batch is cut into processes x grad_accum
    num_threads: int | None = None


PRESETS = {
    # Learning shows in ~3 minutes on 2 CPU cores: the loss falls and blurry faces appear.
    "cpu-tiny": TrainConfig(steps=150, batch_size=6, lr=1.5e-3, warmup=20, checkpoint_every=50,
                            image_steps=150, identity_loss_weight=0.1,
                            model=dict(dim=64, depth=3, num_heads=4, identity_dim=64, num_identity_tokens=8)),
    # The learner's run in notebook 08: single frames only, about 7 minutes on 2 CPU cores (two threads), checked
    # every 300 steps by drawing 8 held-out people from their references alone. lr 2e-3 drew cleaner faces
    # than 1e-3 in the same steps (README, "Notebook 08": the variants measured).
    "cpu-learner": TrainConfig(steps=2400, lr=2e-3, warmup=100, checkpoint_every=300, image_steps=2400,
                               identity_loss_weight=0.1, monitor_every=300,
                               model=dict(dim=96, depth=4, num_heads=4, identity_dim=96, num_identity_tokens=8)),
    # The shipped checkpoint's run, a long CPU run on one thread: 7,000 single-frame steps, then 5,000 steps of
    # which half are clips. The shipped model is this run shortened with --change-schedule to 9,000 steps
    # (4,000 single-frame): data/identity_video_dit/training.json holds the commands and the wall time.
    "cpu-ship": TrainConfig(steps=12000, batch_size=8, lr=1e-3, warmup=200, checkpoint_every=250,
                            image_steps=7000, p_image_batch=0.5, identity_loss_weight=0.1, monitor_every=500,
                            model=dict(dim=96, depth=4, num_heads=4, identity_dim=96, num_identity_tokens=8)),
    # Sized for one GPU: a wider, deeper model, larger batches, bf16 and torch.compile.
    "gpu-small": TrainConfig(steps=12000, batch_size=64, lr=6e-4, warmup=500, checkpoint_every=1000,
                             log_every=50, identity_loss_weight=0.1, bf16=True, compile=True, image_batch_size=256,
                             image_steps=4000, p_image_batch=0.3, monitor_every=1000,
                             model=dict(dim=256, depth=8, num_heads=8, identity_dim=256, num_identity_tokens=16)),
    # Smoke runs (tests, checking a set-up such as `accelerate launch`): a few seconds.
    "smoke": TrainConfig(steps=12, batch_size=2, lr=1e-3, warmup=2, checkpoint_every=3, log_every=1,
                         image_batch_size=4, image_steps=4, p_image_batch=0.5,
                         model=dict(dim=32, depth=1, num_heads=2, identity_dim=32, num_identity_tokens=4)),
}
