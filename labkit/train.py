"""Training IdentityVideoDiT on synthetic faces rendered on the fly, on a GPU or a CPU.

    python -m labkit.train --preset cpu-tiny --out runs/tiny     # learning shows within minutes, 2 CPU cores
    python -m labkit.train --preset cpu-ship --out runs/ship     # what the shipped checkpoint was trained with
    python -m labkit.train --preset gpu-small --out runs/gpu     # one GPU, bf16 + torch.compile

Training is image-first, as in video models trained on images and videos together: the first
``image_steps`` steps see single frames in large batches (:func:`make_image_batch`: no context, only the
references' identity tokens), which teaches the model to draw the face in its tokens with about 8x more
identity examples per CPU-second than clips. Then clips (:func:`make_batch`) teach time, context frames and
cuts, with a share ``p_image_batch`` of single-frame steps mixed in. Each clip step renders clips of training
identities (``labkit.synthfaces``, ids < 1_000_000), picks which conditions the model gets, noises the clips
with a DDPM schedule and regresses the v-target on the frames that were not given as context. Conditions are
dropped at random (identity tokens, face masks, keyframe/context frames), so one checkpoint serves all four
strategies and identity guidance. The identity-preservation loss (``labkit.losses``) is applied to the
predicted clean frames at low noise.

Every ``monitor_every`` steps :func:`monitor` logs what shows whether the model uses its identity tokens:
token spread across faces, swap sensitivity (how much another face's tokens change the prediction) and a
references-only sample of 8 held-out identities scored with ``labkit.metrics.identity_scores``
(``monitor.json``, ``monitor.png``, ``samples.png``).

Everything random in step ``s`` comes from a generator seeded with (seed, s). A checkpoint therefore only
needs the weights, the optimizer and the step: a run resumed after an interruption (even ``kill -9``)
continues exactly the same run and ends with the same weights. Checkpoints are written to a temporary file
and then renamed (``os.replace``), so an interruption never leaves a half-written checkpoint. A NaN or
infinite loss stops training with a message and leaves the last good checkpoint in place.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

__all__ = ["TrainConfig", "PRESETS", "make_batch", "make_image_batch", "is_image_step", "train", "load_checkpoint",
           "plot_losses", "monitor", "plot_monitor", "compare_token_designs", "export_run", "estimate_run_seconds",
           "make_accelerator", "compare_processes", "step_generator", "shard_size"]


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
    # The learner's run in notebook 08: single frames only, about 8 minutes on 2 CPU cores, checked every
    # 300 steps by drawing 8 held-out people from their references alone.
    "cpu-learner": TrainConfig(steps=1800, lr=1e-3, warmup=100, checkpoint_every=300, image_steps=1800,
                               identity_loss_weight=0.1, monitor_every=300,
                               model=dict(dim=96, depth=4, num_heads=4, identity_dim=96, num_identity_tokens=8)),
    # The shipped checkpoint, a long CPU run on one thread: 7,000 single-frame steps, then 5,000 steps of
    # which half are clips.
    "cpu-ship": TrainConfig(steps=12000, batch_size=8, lr=1e-3, warmup=200, checkpoint_every=250,
                            image_steps=7000, p_image_batch=0.5, identity_loss_weight=0.1, monitor_every=500,
                            model=dict(dim=96, depth=4, num_heads=4, identity_dim=96, num_identity_tokens=8)),
    # Sized for one GPU (not yet run in this repository: no GPU was lent).
    "gpu-small": TrainConfig(steps=12000, batch_size=64, lr=6e-4, warmup=500, checkpoint_every=1000,
                             log_every=50, identity_loss_weight=0.1, bf16=True, compile=True, image_batch_size=256,
                             image_steps=4000, p_image_batch=0.3, monitor_every=1000,
                             model=dict(dim=256, depth=8, num_heads=8, identity_dim=256, num_identity_tokens=16)),
    # Smoke runs (tests, checking a set-up such as `accelerate launch`): a few seconds.
    "smoke": TrainConfig(steps=12, batch_size=2, lr=1e-3, warmup=2, checkpoint_every=3, log_every=1,
                             image_batch_size=4, image_steps=4, p_image_batch=0.5,
                             model=dict(dim=32, depth=1, num_heads=2, identity_dim=32, num_identity_tokens=4)),
}


def step_generator(seed: int, step: int, shard: int = 0, device="cpu") -> torch.Generator:
    """The generator for everything random in one step: the same (seed, step, shard) always gives the same
    batch. A step's global batch is cut into shards, one per process and gradient-accumulation micro-batch;
    one process without accumulation has only shard 0."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + step + shard * 1_000_000_007)


def shard_size(global_batch: int, num_shards: int, what: str = "batch_size") -> int:
    """Each shard's share of a global batch; the global batch must divide evenly."""
    if global_batch % num_shards:
        raise ValueError(f"{what} {global_batch} does not divide into {num_shards} shards (processes x "
                         "gradient-accumulation steps); choose a multiple of it")
    return global_batch // num_shards


@torch.no_grad()
def make_batch(cfg: TrainConfig, step: int, recognizer, device, shard: int = 0, num_shards: int = 1) -> dict:
    """Render one training batch for ``step`` (its ``shard``-th part of ``num_shards``) and choose its conditions.

    Returns dict(frames (B,F,3,S,S), context (B,F,3,S,S) (frames, corrupted for some clips), given (B,F) bool,
    cuts (B,F) bool,
    masks (B,F,S,S), references (B,R,3,S,S), embeddings (B,R,512), use_identity (B,) bool,
    use_masks (B,) bool, noise (B,F,3,S,S), timesteps (B,)).
    """
    from labkit.synthfaces import make_clips, train_ids

    g = step_generator(cfg.seed, step, shard)
    b, f, s = shard_size(cfg.batch_size, num_shards), cfg.num_frames, cfg.size
    ids = train_ids(1_000_000)[torch.randint(0, 1_000_000, (b,), generator=g)]
    mode = torch.multinomial(torch.tensor(cfg.context_probs, dtype=torch.float), b, replacement=True, generator=g)
    k = torch.randint(1, 4, (b,), generator=g)  # continuation context length
    cut_after = torch.rand(b, generator=g) < cfg.p_cut_after_context
    # Two shots of the same identities; a clip cut right after its context takes its rest from shot B.
    shot_a = make_clips(ids, num_frames=f, size=s, num_refs=cfg.num_refs, num_cuts=0, generator=g, device=device)
    shot_b = make_clips(ids, num_frames=f, size=s, num_refs=1, num_cuts=0, generator=g, device=device)
    frames, masks = shot_a.frames.clone(), shot_a.masks.clone()
    given = torch.zeros(b, f, dtype=torch.bool)
    cuts = torch.zeros(b, f, dtype=torch.bool)
    refs = shot_a.references
    for i in range(b):
        m = int(mode[i])
        start = 0
        if m in (1, 3):  # keyframe: frame 0 is a reference picture, a different shot
            frames[i, 0] = refs[i, 0]
            masks[i, 0] = 0.0  # the reference's own mask is unknown here; frame 0 is given, not generated
            given[i, 0] = True
            cuts[i, 1] = True
            start = 1
        if m in (2, 3):
            n = int(k[i]) if m == 2 else 1
            given[i, start:start + n] = True
            start += n
        if m != 0 and cut_after[i] and start < f:
            frames[i, start:] = shot_b.frames[i, : f - start]
            masks[i, start:] = shot_b.masks[i, : f - start]
            cuts[i, start] = True
    embeddings = _reference_embeddings(refs, recognizer, cfg, g, device)
    use_identity = torch.rand(b, generator=g) >= cfg.p_drop_identity
    use_masks = torch.rand(b, generator=g) < cfg.p_face_masks
    aug = (torch.rand(b, generator=g) < cfg.p_context_aug).float()[:, None, None, None, None]
    sigma = cfg.context_noise * torch.rand(b, 1, 1, 1, 1, generator=g)
    shift = cfg.context_colour_shift * (2 * torch.rand(b, 1, 3, 1, 1, generator=g) - 1)
    # Random numbers are drawn on the CPU (the same batch on any device), the arithmetic runs on the device.
    corruption = (aug * (sigma * torch.randn(frames.shape, generator=g) + shift)).to(device)
    context = (frames + corruption).clamp(-1, 1)
    noise = torch.randn(frames.shape, generator=g).to(device)
    timesteps = torch.randint(0, 1000, (b,), generator=g).to(device)
    return dict(frames=frames, context=context, given=given.to(device), cuts=cuts.to(device), masks=masks,
                references=refs, embeddings=embeddings, use_identity=use_identity.to(device),
                use_masks=use_masks.to(device), noise=noise, timesteps=timesteps)


def _reference_embeddings(refs, recognizer, cfg: TrainConfig, g, device) -> torch.Tensor:
    """Recognizer embeddings of the references (B, R, 3, S, S) -> (B, R, 512); each row uses 1..R of them
    (the rest repeat their mean), so that the model sees identity from few and many references."""
    b, r = refs.shape[:2]
    embeddings = recognizer(refs.reshape(-1, *refs.shape[2:]).to(device)).reshape(b, r, -1)
    num_refs_used = torch.randint(1, cfg.num_refs + 1, (b,), generator=g)
    for i in range(b):
        embeddings[i, num_refs_used[i]:] = embeddings[i, : num_refs_used[i]].mean(0, keepdim=True)
    return embeddings


def is_image_step(cfg: TrainConfig, step: int) -> bool:
    """Whether step ``step`` trains on single frames (image-first co-training); fixed by (seed, step)."""
    if step < cfg.image_steps:
        return True
    if cfg.p_image_batch <= 0:
        return False
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step + 7_777_777)
    return bool(torch.rand(1, generator=g) < cfg.p_image_batch)


@torch.no_grad()
def make_image_batch(cfg: TrainConfig, step: int, recognizer, device, shard: int = 0, num_shards: int = 1) -> dict:
    """A batch of ``cfg.image_batch_size`` single frames (F = 1) of training identities, no context frames:
    the model must take the face from its identity tokens. Same keys and layouts as :func:`make_batch`."""
    from labkit.synthfaces import make_clips, train_ids

    g = step_generator(cfg.seed, step, shard)
    b, s = shard_size(cfg.image_batch_size, num_shards, "image_batch_size"), cfg.size
    ids = train_ids(1_000_000)[torch.randint(0, 1_000_000, (b,), generator=g)]
    shot = make_clips(ids, num_frames=1, size=s, num_refs=cfg.num_refs, num_cuts=0, generator=g, device=device)
    embeddings = _reference_embeddings(shot.references, recognizer, cfg, g, device)
    use_identity = torch.rand(b, generator=g) >= cfg.p_drop_identity_images
    use_masks = torch.rand(b, generator=g) < cfg.p_face_masks
    noise = torch.randn(shot.frames.shape, generator=g).to(device)
    timesteps = torch.randint(0, 1000, (b,), generator=g).to(device)
    none = torch.zeros(b, 1, dtype=torch.bool, device=device)
    return dict(frames=shot.frames, context=torch.zeros_like(shot.frames), given=none, cuts=none.clone(),
                masks=shot.masks, references=shot.references, embeddings=embeddings,
                use_identity=use_identity.to(device), use_masks=use_masks.to(device), noise=noise,
                timesteps=timesteps)


def compute_loss(model, scheduler, batch: dict, cfg: TrainConfig, recognizer=None):
    """Denoising loss (v-target, on frames that were not given) plus the optional identity loss.

    Returns (loss, dict of float terms).
    """
    x0, noise, t = batch["frames"], batch["noise"], batch["timesteps"]
    x_t = scheduler.add_noise(x0, noise, t)
    target = scheduler.get_velocity(x0, noise, t)
    from accelerate.utils import extract_model_from_parallel

    # encode_identity is a method of the model itself, not of a DistributedDataParallel or compiled wrapper.
    tokens = extract_model_from_parallel(model).encode_identity(batch["embeddings"])
    # Dropping identity = giving zero strength for that clip; the tokens stay shaped (B, T, D).
    strength = batch["use_identity"].float()
    masks = torch.where(batch["use_masks"][:, None, None, None], batch["masks"], torch.ones_like(batch["masks"]))
    pred = model(x_t, t, context_frames=batch["context"], context_mask=batch["given"], face_masks=masks,
                 cuts=batch["cuts"], cross_attention_kwargs={"identity_tokens": tokens,
                                                             "identity_strength": strength}).sample
    weight = (~batch["given"]).float()[:, :, None, None, None]
    denoise = ((pred.float() - target) ** 2 * weight).sum() / (weight.sum() * pred[0, 0].numel())
    terms = {"denoise": denoise.item()}
    loss = denoise
    if cfg.identity_loss_weight > 0 and recognizer is not None:
        from labkit.losses import identity_preservation_loss

        low = (t < cfg.identity_loss_max_t) & batch["use_identity"]
        if low.any():
            ab = scheduler.alphas_cumprod.to(x_t.device)[t][:, None, None, None, None]
            x0_pred = (ab.sqrt() * x_t - (1 - ab).sqrt() * pred.float()).clamp(-1, 1)
            keep = ~batch["given"][low]
            video = x0_pred[low][:, keep.any(0)]
            id_loss = identity_preservation_loss(video, batch["references"][low], recognizer)
            loss = loss + cfg.identity_loss_weight * id_loss
            terms["identity"] = id_loss.item()
    return loss, terms


# Why a weights-only load failed, by the unpickler's message: these mean the file holds a Python object whose
# loading would run code (a class to build, a function to call), not that its bytes are damaged.
_CODE_MARKERS = ("Unsupported global", "unsupported GLOBAL", "Trying to call reduce", "Can only create new object",
                 "Can only build")
#: What every training checkpoint holds.
_CHECKPOINT_KEYS = ("model", "optimizer", "lr_scheduler", "step", "losses")


def load_checkpoint(path) -> dict:
    """Read a training checkpoint (weights, optimizer, LR schedule, step, losses, config).

    Checkpoints hold only tensors and plain Python values (dict, list, tuple, int, float, str, bool, None), so
    they are read with ``torch.load(weights_only=True)``: nothing in the file is executed. A file that would
    need code to run to load (a pickled object) is refused with a ValueError, and so is a corrupt one.
    """
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = str(err).splitlines()
        detail = next((s.strip() for s in lines if any(m in s for m in _CODE_MARKERS)), None)
        if detail is not None:
            raise ValueError(f"training checkpoint {path} needs arbitrary code to load and is refused: it holds a "
                             f"pickled Python object ({detail.split(' was not')[0][:200]}), while a training "
                             "checkpoint holds only tensors and plain values. Use checkpoints written by "
                             "labkit.train, or start afresh (--fresh or another --out).") from None
        reason = next((s.strip() for s in lines[::-1] if "Unsupported" in s), str(err)[:200])
        raise ValueError(f"training checkpoint {path} is corrupt, or needs arbitrary code to load, and is refused "
                         f"(UnpicklingError: {reason}); start afresh with --fresh or another --out") from None
    except Exception as err:  # noqa: BLE001 - re-raised with the path named
        raise ValueError(f"training checkpoint {path} is corrupt or unreadable ({type(err).__name__}: "
                         f"{str(err)[:300]}); start afresh with --fresh or another --out") from err
    if isinstance(state, dict) and "checksum" in state and state["checksum"] != _checksum(state):
        raise ValueError(f"training checkpoint {path} is corrupt: its contents do not match the checksum written "
                         "with it (damaged on disk or in a copy); start afresh with --fresh or another --out")
    missing = [k for k in _CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing or not isinstance(state.get("config", {}), dict):
        raise ValueError(f"{path} is not a training checkpoint of labkit.train "
                         f"({'missing ' + ', '.join(missing) if missing else 'its config is not a dict'})")
    return state


def _plain(obj, where: str = "checkpoint"):
    """``obj`` with only tensors and plain Python values, which a weights-only load reads back as they were.

    NumPy scalars become Python numbers, NumPy arrays tensors, named tuples tuples, int/str subclasses their
    base type; anything else raises TypeError naming where it is (at save time, not at the next load).
    """
    from collections import OrderedDict

    import numpy as np

    if obj is None or isinstance(obj, torch.Tensor) or type(obj) in (bool, int, float, str):
        return obj
    if isinstance(obj, np.generic) and obj.dtype.kind in "biuf":
        return obj.item()
    if isinstance(obj, np.ndarray) and obj.dtype.kind in "biuf":
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, (bool, int, float, str)):  # IntEnum, str subclasses...: their plain base type
        return next(t(obj) for t in (bool, int, float, str) if isinstance(obj, t))
    if isinstance(obj, dict):
        out = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            out[_plain(k, f"a key of {where}")] = _plain(v, f"{where}[{k!r}]")
        if getattr(obj, "_metadata", None) is not None:  # nn.Module.state_dict's per-module versions
            out._metadata = _plain(obj._metadata, f"{where}._metadata")
        return out
    if isinstance(obj, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__name__}; a training checkpoint holds only "
                    "tensors, dicts, lists, tuples, int, float, str, bool and None (so that it loads without "
                    "running code)")


def _checksum(state: dict) -> str:
    """SHA-256 of everything in a checkpoint but its "checksum" entry: every tensor's bytes, dtype and shape and
    every plain value, in order. torch.load checks no CRC, so without it a flipped bit would load silently."""
    import hashlib

    h = hashlib.sha256()

    def feed(x):
        if isinstance(x, torch.Tensor):
            h.update(f"T{x.dtype}{tuple(x.shape)}".encode())
            h.update(x.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            h.update(f"D{len(x)}".encode())
            for k, v in x.items():
                feed(k)
                feed(v)
        elif isinstance(x, (list, tuple)):
            h.update(f"{type(x).__name__[0]}{len(x)}".encode())
            for v in x:
                feed(v)
        else:
            h.update(f"{type(x).__name__}:{x!r};".encode())

    feed({k: v for k, v in state.items() if k != "checksum"})
    return h.hexdigest()


def _save_atomic(obj, path: Path) -> None:
    obj = _plain(obj)  # tensors and plain values only: load_checkpoint reads it with weights_only=True
    if isinstance(obj, dict):
        obj["checksum"] = _checksum(obj)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)  # atomic: readers see the old file or the new one, never half of one


def plot_losses(losses: list, path=None, title: str = "training loss"):
    """The loss curve (raw and smoothed) as a matplotlib Figure; saved as PNG when ``path`` is given.

    Built without pyplot, so it never touches the notebook's backend: a cell that returns it shows it.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3))
    ax = fig.subplots()
    steps = [s for s, _ in losses]
    values = [v for _, v in losses]
    ax.plot(steps, values, alpha=0.35, label="per step")
    if len(values) >= 10:
        w = max(5, len(values) // 20)
        smooth = torch.tensor(values).unfold(0, w, 1).mean(1).tolist()
        ax.plot(steps[w - 1:], smooth, label=f"mean of {w}")
    ax.set_xlabel("step")
    ax.set_ylabel("denoising loss (v-MSE)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(Path(path), dpi=110)
    return fig


#: Held-out identities the training monitor draws from their references alone (never trained on).
MONITOR_IDS = 8


@torch.no_grad()
def monitor(model, recognizer, cfg: TrainConfig, num_inference_steps: int = 20, guidance: float = 2.0) -> dict:
    """Is the model using its identity tokens? Measured on :data:`MONITOR_IDS` held-out identities.

    token_spread: mean distance between two faces' tokens, relative to the tokens' size (0 = every face
    gets the same tokens, the collapse to watch for). swap_sensitivity: relative change of the prediction on a
    real frame noised to t=500 when another face's tokens are given. score and top1: a references-only sample
    (one frame from pure noise, identity guidance ``guidance``) scored with ``identity_scores`` against its
    own references, and how often its best match among the 8 reference sets is its own.
    Returns the figures and ``samples`` (8, 3, S, S) next to ``references`` (8, 3, S, S).
    """
    from labkit.metrics import identification_top1, identity_scores
    from labkit.pipeline import ReferenceConditionedGenerator, make_scheduler
    from labkit.synthfaces import make_clips, test_ids

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(4321)
    clips = make_clips(test_ids(MONITOR_IDS, offset=70_000), num_frames=1, size=cfg.size, num_refs=3, generator=g)
    refs = clips.references
    emb = recognizer(refs.flatten(0, 1).to(device)).reshape(MONITOR_IDS, 3, -1)
    tokens = model.encode_identity(emb)
    flat = tokens.flatten(1)
    pair = torch.cdist(flat, flat)
    spread = (pair.sum() / (MONITOR_IDS * (MONITOR_IDS - 1)) / flat.norm(dim=1).mean()).item()
    sched = make_scheduler("ddpm")
    t = torch.full((MONITOR_IDS,), 500, device=device)
    x_t = sched.add_noise(clips.frames.to(device), torch.randn(clips.frames.shape, generator=g).to(device), t)
    own = model(x_t, t, cross_attention_kwargs={"identity_tokens": tokens}).sample
    swapped = model(x_t, t, cross_attention_kwargs={"identity_tokens": tokens.roll(1, 0)}).sample
    swap = ((own - swapped).norm() / own.norm().clamp_min(1e-12)).item()  # 0 while the output is still 0
    pipe = ReferenceConditionedGenerator(model, make_scheduler("ddim"), recognizer)
    samples = pipe.generate(reference_images=refs, num_frames=1, keyframe=False, strategy="explicit",
                            identity_strength=1.0, identity_guidance=guidance, num_inference_steps=num_inference_steps,
                            generator=torch.Generator().manual_seed(7), check_faces=False, progress=False).frames
    scores = identity_scores(samples.cpu(), refs, recognizer)
    model.train(was_training)
    return {"token_spread": spread, "swap_sensitivity": swap, "score": scores.mean().item(),
            "top1": identification_top1(samples.cpu(), refs, recognizer), "samples": samples[:, 0].cpu(),
            "references": refs[:, 0]}


def plot_monitor(records: list, path=None):
    """The monitor's figures over training (references-only score and top-1, token spread, swap sensitivity)
    as a Figure with fixed axes; saved as PNG when ``path`` is given."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3))
    ax1, ax2 = fig.subplots(1, 2)
    steps = [r["step"] for r in records]
    ax1.plot(steps, [r["score"] for r in records], "o-", label="identity score (references only)")
    ax1.plot(steps, [r["top1"] for r in records], "s--", label="top-1 among 8")
    ax1.set_ylim(-0.1, 1.05)
    ax1.set_xlabel("step")
    ax1.set_title("drawing the person from the references alone")
    ax1.legend(fontsize=8)
    positive = lambda key: ([r["step"] for r in records if r[key] > 0], [r[key] for r in records if r[key] > 0])
    ax2.plot(*positive("token_spread"), "o-", label="token spread across faces")
    ax2.plot(*positive("swap_sensitivity"), "s--", label="swap sensitivity (0 at step 0: the output starts at 0)")
    ax2.set_yscale("log")  # swap sensitivity lives around 1e-3..1e-1, the spread around 1: both must show
    ax2.set_ylim(1e-4, 3)
    ax2.set_xlabel("step")
    ax2.set_title("does the model read its identity tokens?")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(Path(path), dpi=110)
    return fig


def estimate_run_seconds(cfg: TrainConfig, device="cpu", probe_images: int = 4, probe_clips: int = 1) -> dict:
    """How long ``cfg`` would train on ``device``, from one timed single-frame step and one timed clip step at
    a small batch (``probe_images`` frames, ``probe_clips`` clips) scaled linearly to the preset's batches and
    step counts. A rough figure (a bigger batch uses the hardware a little better), but it needs seconds, not
    the run itself. Returns dict(image_step_s, clip_step_s, image_steps, clip_steps, total_s)."""
    from labkit.faces import FaceRecognitionBackbone
    from labkit.model import IdentityVideoDiT
    from labkit.pipeline import make_scheduler

    device = torch.device(device)
    probe = replace(cfg, image_batch_size=probe_images, batch_size=probe_clips, device=str(device))
    model = IdentityVideoDiT(sample_size=cfg.size, max_frames=cfg.num_frames, **cfg.model).to(device)
    recognizer = FaceRecognitionBackbone(device=device)
    scheduler = make_scheduler("ddpm")
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(device)

    def seconds(make):
        times = []
        for step in range(2):  # the first call warms up
            start = time.perf_counter()
            loss, _ = compute_loss(model, scheduler, make(probe, step, recognizer, device), probe, recognizer)
            loss.backward()
            times.append(time.perf_counter() - start)
        return times[-1]

    image_s = seconds(make_image_batch) * cfg.image_batch_size / probe_images
    clip_s = seconds(make_batch) * cfg.batch_size / probe_clips
    mixed = cfg.steps - cfg.image_steps
    image_steps = cfg.image_steps + round(mixed * cfg.p_image_batch)
    clip_steps = cfg.steps - image_steps
    return {"image_step_s": image_s, "clip_step_s": clip_s, "image_steps": image_steps, "clip_steps": clip_steps,
            "total_s": image_steps * image_s + clip_steps * clip_s}


def compare_token_designs(steps: int = 150, designs=("resampler", "face_only"), seed: int = 0,
                          progress: bool = False) -> dict:
    """Train the cpu-tiny model once per identity-token design, on the same single-frame batches, and return
    the monitor's figures (:func:`monitor`) at the start and at the end of each run: {design: [first, last]}.

    It shows whether training keeps the tokens different across faces (token spread) and whether the model
    reads them (swap sensitivity), which is how the learned bank's collapse shows (notebook 04).
    """
    import tempfile

    base = PRESETS["cpu-tiny"]
    out = {}
    for design in designs:
        cfg = replace(base, steps=steps, image_steps=steps, monitor_every=steps, checkpoint_every=steps, seed=seed,
                      warmup=min(base.warmup, steps // 4), model={**base.model, "identity_token_design": design})
        with tempfile.TemporaryDirectory() as folder:
            train(cfg, folder, resume=False, progress=progress)
            out[design] = json.loads((Path(folder) / "monitor.json").read_text())
    return out


def _write_json_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def make_accelerator(cfg: TrainConfig):
    """The run's :class:`accelerate.Accelerator`: one process (CPU, CUDA or MPS) or one of several under
    ``accelerate launch`` (DDP over gloo on CPUs, NCCL on GPUs), bf16 mixed precision and torch.compile on CUDA
    only, ``cfg.grad_accum`` micro-batches per optimizer step."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    from labkit.common import get_device

    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # One process: a fresh state each call, so that runs with other settings can follow in one session
        # (a notebook, the tests). Under `accelerate launch` the launcher's state is kept.
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    wanted = torch.device(cfg.device) if cfg.device else get_device()
    gpu = wanted.type == "cuda"
    if os.environ.get("ACCELERATE_USE_CPU") == "True" and "MASTER_ADDR" in os.environ and \
            "WORLD_SIZE" not in os.environ and "OMPI_COMM_WORLD_SIZE" not in os.environ:
        print("WARNING: `accelerate launch --cpu --num_processes N` started ONE process: Accelerate starts several "
              "CPU processes only through MPI (--mpirun_hostfile). On one machine use `accelerate launch "
              "--multi_gpu --num_processes N` (torchrun; on a machine without GPUs Accelerate uses gloo on the "
              "CPU). Training goes on in one process.", flush=True)
    return Accelerator(cpu=wanted.type == "cpu", mixed_precision="bf16" if cfg.bf16 and gpu else "no",
                       gradient_accumulation_steps=cfg.grad_accum,
                       dynamo_backend="inductor" if cfg.compile and gpu else "no")


def train(cfg: TrainConfig, out, resume: bool = True, progress: bool = True, change_schedule: bool = False,
          on_monitor=None) -> dict:
    """Train (or resume) a run in folder ``out``. Returns dict(model, losses, seconds, clips_per_second, ...).

    Runs in one process, or in each process of ``accelerate launch --num_processes N -m labkit.train ...``:
    every process renders its own shard of each step's global batch (:func:`step_generator`), Accelerate
    averages the gradients, and only process 0 writes files, monitors and shows progress.

    ``on_monitor(records, samples, references, losses)`` is called at every monitor check-in (every
    ``cfg.monitor_every`` steps), e.g. to refresh a live figure in a notebook.

    Resuming refuses a checkpoint written with other settings; ``change_schedule=True`` allows a different
    number of steps only (e.g. shortening a run that a busy CPU cannot finish), recorded in ``summary.json``.

    Writes ``out/checkpoint.pt`` every ``cfg.checkpoint_every`` steps and at the end, ``out/model``
    (save_pretrained, safetensors), ``out/loss.png`` and ``out/summary.json``.
    """
    from tqdm.auto import tqdm

    from labkit.faces import FaceRecognitionBackbone
    from labkit.model import IdentityVideoDiT
    from labkit.pipeline import make_scheduler

    accelerator = make_accelerator(cfg)
    main_process, device = accelerator.is_main_process, accelerator.device
    world = accelerator.num_processes
    num_shards = world * cfg.grad_accum
    shard_size(cfg.batch_size, num_shards)
    shard_size(cfg.image_batch_size, num_shards, "image_batch_size")
    out = Path(out)
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    elif world > 1 and device.type == "cpu":  # processes on one CPU share its cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    torch.manual_seed(cfg.seed)
    model = IdentityVideoDiT(sample_size=cfg.size, max_frames=cfg.num_frames, **cfg.model).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    # Linear warm-up, then cosine decay to 10% of the peak learning rate. Stepped once per optimizer step by
    # us (not prepared by Accelerate, which would step it once per process).
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup)) * (
        0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, s / max(1, cfg.steps))))))
    step, losses, schedule_changes = 0, [], []
    ckpt_path = out / "checkpoint.pt"
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        saved = dict(state.get("config", {}))
        schedule = ("steps", "image_steps")  # what --change-schedule may change: the length of each phase
        if change_schedule and any(saved.get(k) != getattr(cfg, k) for k in schedule):
            change = {f"{k}_before": saved.get(k) for k in schedule} | {f"{k}_after": getattr(cfg, k)
                                                                        for k in schedule}
            if main_process:
                print(f"changing the schedule of {ckpt_path} from step {state['step']}: {change}")
            schedule_changes.append({"at_step": state["step"], **change})
            saved.update({k: getattr(cfg, k) for k in schedule})
        _check_same_run(saved, cfg, ckpt_path)
        saved_processes = state.get("processes", 1)
        if saved_processes != world:
            raise ValueError(f"{ckpt_path} was written by a run in {saved_processes} process(es), this one has "
                             f"{world}: each process draws its own shard of every batch, so the run would not "
                             "continue exactly; resume with the same number of processes")
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["lr_scheduler"])
        except (RuntimeError, KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
            raise ValueError(f"{ckpt_path} does not fit this run's model and optimizer ({type(err).__name__}: "
                             f"{str(err)[:300]}); start afresh with --fresh or another --out") from err
        if not isinstance(state["step"], int) or state["step"] < 0 or not isinstance(state["losses"], list):
            raise ValueError(f"{ckpt_path} holds step {state['step']!r} (expected an int >= 0) and losses of "
                             f"type {type(state['losses']).__name__} (expected a list)")
        step, losses = state["step"], state["losses"]
        schedule_changes = state.get("schedule_changes", []) + schedule_changes
        if main_process:
            print(f"resumed from {ckpt_path} at step {step}")
    recognizer = FaceRecognitionBackbone(device=device)
    monitor_path = out / "monitor.json"
    records = [r for r in json.loads(monitor_path.read_text()) if r["step"] <= step] \
        if monitor_path.exists() and step > 0 else []
    noise_scheduler = make_scheduler("ddpm")
    noise_scheduler.alphas_cumprod = noise_scheduler.alphas_cumprod.to(device)
    ddp_model, opt = accelerator.prepare(model, opt)  # model stays the plain module: saving, monitoring

    def save(at_step):
        if main_process:
            _save_atomic({"model": model.state_dict(), "optimizer": opt.optimizer.state_dict(),
                          "lr_scheduler": sched.state_dict(), "step": at_step, "losses": losses,
                          "config": asdict(cfg), "processes": world, "schedule_changes": schedule_changes},
                         ckpt_path)

    def check_in(at_step):
        from PIL import Image

        from labkit.common import image_strip

        m = monitor(model, recognizer, cfg)
        model.train()
        records.append({"step": at_step, **{k: v for k, v in m.items() if not torch.is_tensor(v)}})
        _write_json_atomic(records, monitor_path)
        plot_monitor(records, out / "monitor.png")
        grid = torch.cat([m["references"], m["samples"]])
        strip = Image.fromarray(image_strip(grid, ncols=MONITOR_IDS))  # references above, samples below
        strip.resize((strip.width * 2, strip.height * 2), Image.NEAREST).save(out / "samples.png")
        bar.write(f"step {at_step}: references-only score {m['score']:.3f}, top-1 {m['top1']:.2f}, "
                  f"token spread {m['token_spread']:.3f}, swap sensitivity {m['swap_sensitivity']:.4f}")
        if on_monitor is not None:
            on_monitor(records, m["samples"], m["references"], losses)

    model.train()
    start = time.perf_counter()
    busy = {"image": 0.0, "clip": 0.0}  # seconds spent in each kind of step (monitors not counted)
    counts = {"image": 0, "clip": 0}
    bar = tqdm(total=cfg.steps, initial=step, desc="training", disable=not (progress and main_process))
    if cfg.monitor_every and step == 0 and main_process:
        check_in(0)
    while step < cfg.steps:
        t_step = time.perf_counter()
        kind = "image" if is_image_step(cfg, step) else "clip"  # the same on every process
        make = make_image_batch if kind == "image" else make_batch
        denoise = 0.0
        for micro in range(cfg.grad_accum):
            batch = make(cfg, step, recognizer, device, shard=accelerator.process_index + world * micro,
                         num_shards=num_shards)
            with accelerator.accumulate(ddp_model):
                loss, terms = compute_loss(ddp_model, noise_scheduler, batch, cfg, recognizer)
                # Every process sees every process's loss, so all of them stop together on a NaN.
                seen = accelerator.reduce(torch.stack([loss.detach(), torch.tensor(terms["denoise"], device=device)]),
                                          "mean")
                if not torch.isfinite(seen[0]):
                    bar.close()
                    raise FloatingPointError(
                        f"loss is {seen[0].item()} at step {step}: training stopped. The last good checkpoint "
                        f"({ckpt_path}, step {state_step(ckpt_path)}) is kept; lower the learning rate or check "
                        "the data, then run again to resume from it.")
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(ddp_model.parameters(), 1.0)
                opt.step()  # Accelerate skips it until the last micro-batch
                opt.zero_grad(set_to_none=True)
            denoise += seen[1].item() / cfg.grad_accum
        sched.step()
        step += 1
        losses.append((step, denoise))
        busy[kind] += time.perf_counter() - t_step
        counts[kind] += 1
        if cfg.monitor_every and step % cfg.monitor_every == 0 and main_process:
            check_in(step)
        if step % cfg.log_every == 0:
            bar.set_postfix(loss=f"{sum(v for _, v in losses[-cfg.log_every:]) / cfg.log_every:.4f}")
        bar.update()
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save(step)
    bar.close()
    seconds = time.perf_counter() - start
    model.eval()
    first = sum(v for _, v in losses[:20]) / max(1, len(losses[:20]))
    last = sum(v for _, v in losses[-20:]) / max(1, len(losses[-20:]))
    summary = {"steps": step, "seconds_this_session": seconds,
               "clips_per_second": counts["clip"] * cfg.batch_size / busy["clip"] if busy["clip"] else None,
               "images_per_second": counts["image"] * cfg.image_batch_size / busy["image"] if busy["image"] else None,
               "image_steps": counts["image"], "clip_steps": counts["clip"],
               "monitor": records[-1] if records else None,
               "loss_first_20": first, "loss_last_20": last, "device": str(device), "processes": world,
               "threads": torch.get_num_threads(), "config": asdict(cfg), "schedule_changes": schedule_changes}
    if main_process:
        model.save_pretrained(out / "model")
        plot_losses(losses, out / "loss.png")
        if cfg.monitor_every and (not records or records[-1]["step"] != step):
            check_in(step)
            summary["monitor"] = records[-1]
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        sessions_path = out / "wall_time.json"  # one entry per invocation of train()
        sessions = json.loads(sessions_path.read_text()) if sessions_path.exists() else []
        sessions.append({"end_step": step, "seconds": seconds, "image_steps": counts["image"],
                         "clip_steps": counts["clip"], "processes": world, "threads": torch.get_num_threads(),
                         "device": str(device), "cpu": _cpu_name()})
        _write_json_atomic(sessions, sessions_path)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return {"model": model, "losses": losses, **summary}


def compare_processes(preset: str, out, processes=(1, 2), extra_args=()) -> str:
    """Train ``preset`` on the CPU once per entry of ``processes`` under ``accelerate launch --num_processes N``
    (the same global batch each time, a fresh folder ``out/processes-N``) and return a table of their speeds
    from each run's ``summary.json``. On a CPU, processes share its cores: expect DDP's overhead, not a gain."""
    import subprocess
    import sys

    rows = ["| processes | threads each | images/s | clips/s | wall s |", "|---|---|---|---|---|"]
    for n in processes:
        run_dir = Path(out) / f"processes-{n}"
        # Several processes on one machine start through torchrun (--multi_gpu); without GPUs Accelerate then
        # joins them with gloo on the CPU (`--cpu` would start several only through MPI).
        command = [sys.executable, "-m", "accelerate.commands.launch", *(["--multi_gpu"] if n > 1 else ["--cpu"]),
                   "--num_processes", str(n), "--num_machines", "1", "--mixed_precision", "no",
                   "--dynamo_backend", "no", "-m", "labkit.train", "--device", "cpu",
                   # the cores shared out among the processes, unless extra_args name --threads
                   *([] if "--threads" in extra_args else ["--threads", str(max(1, (os.cpu_count() or 1) // n))]),
                   "--preset", preset, "--out", str(run_dir), "--fresh", "--no-progress", *extra_args]
        t0 = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-2000:]}"
                               f"{done.stderr[-2000:]}")
        summary = json.loads((run_dir / "summary.json").read_text())
        fmt = lambda v: f"{v:.1f}" if v else "-"
        rows.append(f"| {n} | {summary['threads']} | {fmt(summary['images_per_second'])} | "
                    f"{fmt(summary['clips_per_second'])} | {wall:.0f} |")
    return "\n".join(rows)


def _cpu_name() -> str:
    """The processor's model name and core count (Linux), for the training record."""
    try:
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
    except OSError:
        names = []
    return f"{os.cpu_count()} cores, {names[0] if names else 'unknown CPU'}"


def export_run(run_dir, dest, command: str) -> Path:
    """Write a finished run's model to ``dest`` in fp16 (``save_pretrained``, safetensors) with
    ``training.json`` (the command, steps, wall time per session, the CPU, the loss every 10 steps and the
    monitor's records) and ``learning_curve.png`` (:func:`plot_monitor`). This is how data/identity_video_dit
    is made."""
    from labkit.model import load_model

    run_dir, dest = Path(run_dir), Path(dest)
    model = load_model(run_dir / "model")
    model.half().save_pretrained(dest)
    state = load_checkpoint(run_dir / "checkpoint.pt")
    losses = state["losses"]
    sessions_path, summary_path = run_dir / "wall_time.json", run_dir / "summary.json"
    if sessions_path.exists():
        sessions = json.loads(sessions_path.read_text())
    else:  # a run from before sessions were recorded: its one summary
        summary = json.loads(summary_path.read_text())
        sessions = [{"end_step": summary["steps"], "seconds": summary["seconds_this_session"],
                     "image_steps": summary.get("image_steps"), "clip_steps": summary.get("clip_steps"),
                     "threads": summary["threads"], "device": summary["device"], "cpu": _cpu_name(),
                     "images_per_second": summary.get("images_per_second"),
                     "clips_per_second": summary.get("clips_per_second")}]
    monitor_path = run_dir / "monitor.json"
    mean = lambda pairs: sum(v for _, v in pairs) / max(1, len(pairs))
    record = {
        "command": command, "steps": state["step"], "sessions": sessions,
        "wall_minutes": sum(s["seconds"] for s in sessions) / 60, "cpu": sessions[-1]["cpu"],
        "loss_first_100": mean(losses[:100]), "loss_last_100": mean(losses[-100:]),
        "schedule_changes": state.get("schedule_changes", []), "config": state["config"],
        "loss_every_10_steps": [(s, round(v, 5)) for s, v in losses[9::10]],
        "monitor": json.loads(monitor_path.read_text()) if monitor_path.exists() else [],
    }
    (dest / "training.json").write_text(json.dumps(record, indent=1))
    if record["monitor"]:
        plot_monitor(record["monitor"], dest / "learning_curve.png")
    return dest


# What may change between an interrupted run and its resumption without making it a different run.
_RESUMABLE_CHANGES = {"device", "num_threads", "log_every", "checkpoint_every"}


def _check_same_run(saved: dict, cfg: TrainConfig, path) -> None:
    """Refuse to resume a checkpoint written by a different configuration (other model, seed, steps...)."""
    current = asdict(cfg)
    differ = sorted(k for k in current if k not in _RESUMABLE_CHANGES and k in saved
                    and json.dumps(saved[k], default=str) != json.dumps(current[k], default=str))
    if differ:
        detail = ", ".join(f"{k}: {saved[k]!r} in the checkpoint, {current[k]!r} now" for k in differ)
        raise ValueError(f"{path} was written by a different run ({detail}); resume with the same settings, "
                         "or pass --fresh / another --out to start a new run")


def state_step(path) -> int | None:
    """The step stored in a checkpoint, or None when there is none."""
    try:
        return load_checkpoint(path)["step"]
    except (ValueError, FileNotFoundError):
        return None


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train IdentityVideoDiT on synthetic faces")
    parser.add_argument("--preset", default="cpu-tiny", choices=sorted(PRESETS))
    parser.add_argument("--out", help="run folder: checkpoint.pt, model/, loss.png, summary.json "
                        "(default runs/<preset>)")
    parser.add_argument("--steps", type=int, help="override the preset's number of steps")
    parser.add_argument("--image-steps", type=int, help="override the preset's number of single-frame steps first")
    parser.add_argument("--batch-size", type=int, help="global batch (all processes and micro-batches together)")
    parser.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step (gradient accumulation)")
    parser.add_argument("--checkpoint-every", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in --out")
    parser.add_argument("--change-schedule", action="store_true",
                        help="resume even though --steps or --image-steps differ from the checkpoint's (the LR "
                             "schedule and the phases change; recorded in the checkpoint and training.json)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--estimate", action="store_true", help="do not train: time one step of each kind at a "
                        "small batch and print how long the preset would take on this device")
    parser.add_argument("--compare-processes", type=int, nargs="+", metavar="N", help="do not train here: run the "
                        "preset on the CPU under `accelerate launch --num_processes N` for each N (same global batch, "
                        "fresh folders under --out) and print their speeds side by side")
    parser.add_argument("--export", metavar="DIR", help="after training, write the model in fp16 with its "
                        "training.json to DIR (how data/identity_video_dit is made)")
    args = parser.parse_args(argv)
    for flag, value, low, high in (("--steps", args.steps, 1, 10**9), ("--batch-size", args.batch_size, 1, 4096),
                                   ("--checkpoint-every", args.checkpoint_every, 1, 10**9),
                                   ("--grad-accum", args.grad_accum, 1, 1024),
                                   ("--threads", args.threads, 1, 1024), ("--seed", args.seed, 0, 2**40)):
        if value is not None and not low <= value <= high:
            parser.error(f"argument {flag}: must be in {low}..{high}, got {value}")
    if args.device is not None:
        try:
            device = torch.device(args.device)
        except (RuntimeError, ValueError) as err:
            parser.error(f"argument --device: {str(err).splitlines()[0]}")
        if device.type == "cuda" and not torch.cuda.is_available():
            parser.error(f"argument --device: {args.device} asked for, but CUDA is not available here")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"argument --out: {args.out} is a file, not a run folder")
    cfg = PRESETS[args.preset]
    overrides = {"steps": args.steps, "image_steps": args.image_steps, "batch_size": args.batch_size,
                 "checkpoint_every": args.checkpoint_every, "grad_accum": args.grad_accum,
                 "seed": args.seed, "device": args.device, "num_threads": args.threads}
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    if args.estimate:
        from labkit.common import get_device

        e = estimate_run_seconds(cfg, cfg.device or get_device())
        print(f"{args.preset} here: about {e['image_step_s']:.2f} s per single-frame step and {e['clip_step_s']:.2f} s "
              f"per clip step, so {e['total_s'] / 3600:.1f} hours for its {e['image_steps']:,} + {e['clip_steps']:,} "
              "steps (one timed step of each kind at a small batch, scaled up). Not started.")
        return
    out = args.out or f"runs/{args.preset}"
    if args.compare_processes:
        forwarded = []
        for flag in ("steps", "image_steps", "batch_size", "seed", "grad_accum", "threads"):
            if getattr(args, flag) is not None:
                forwarded += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        print(compare_processes(args.preset, out, args.compare_processes, forwarded))
        return
    from accelerate import PartialState

    try:
        result = train(cfg, out, resume=not args.fresh, progress=not args.no_progress,
                       change_schedule=args.change_schedule)
    except (FloatingPointError, ValueError) as err:
        if PartialState().is_main_process:  # the state train() set up (one process or a launched group)
            print(f"ERROR: {err}")
        raise SystemExit(2) from err
    if not PartialState().is_main_process:
        return
    speed = ", ".join(f"{result[k]:.1f} {k.split('_')[0]}/s" for k in ("images_per_second", "clips_per_second")
                      if result[k])
    print(f"done: {result['steps']} steps, loss {result['loss_first_20']:.4f} -> {result['loss_last_20']:.4f}, "
          f"{speed} on {result['device']}; model in {Path(out) / 'model'}")
    if args.export:
        import sys

        command = "python -m labkit.train " + " ".join(sys.argv[1:] if argv is None else argv)
        print(f"exported to {export_run(out, args.export, command)}")


if __name__ == "__main__":
    main()
