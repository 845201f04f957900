"""Training IdentityVideoDiT on synthetic clips rendered on the fly, on a GPU or a CPU.

    python -m labkit.train --preset cpu-tiny --out runs/tiny     # learning shows within minutes, 2 CPU cores
    python -m labkit.train --preset cpu-ship --out runs/ship     # what the shipped checkpoint was trained with
    python -m labkit.train --preset gpu-small --out runs/gpu     # one GPU, ~15 minutes, bf16 + torch.compile

Each step renders a batch of clips of training identities (``labkit.synthfaces``, ids < 1_000_000) on the
training device, picks which conditions the model gets, noises the clips with a DDPM schedule and
regresses the v-target on the frames that were not given as context. Conditions are dropped at random
(identity tokens, face masks, keyframe/context frames), so one checkpoint serves all four strategies and
identity guidance. An optional identity-preservation loss (``labkit.losses``) is applied to the predicted
clean frames at low noise.

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

__all__ = ["TrainConfig", "PRESETS", "make_batch", "train", "load_checkpoint", "plot_losses"]


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
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    device: str | None = None
    bf16: bool = False
    compile: bool = False
    num_threads: int | None = None
    fail_nan_at: int | None = None  # for tests and demos: pretend the loss became NaN at this step


PRESETS = {
    # Learning shows in ~3 minutes on 2 CPU cores: the loss falls and blurry faces appear.
    "cpu-tiny": TrainConfig(steps=150, batch_size=6, lr=1.5e-3, warmup=20, checkpoint_every=50,
                            model=dict(dim=64, depth=3, num_heads=4, identity_dim=64, num_identity_tokens=8)),
    # The shipped checkpoint: ~0.27 s a step alone on 2 CPU cores, so about 30 minutes (longer on a busy CPU).
    "cpu-ship": TrainConfig(steps=6000, batch_size=8, lr=1e-3, warmup=100, checkpoint_every=100,
                            model=dict(dim=96, depth=4, num_heads=4, identity_dim=96, num_identity_tokens=8)),
    # Sized for one GPU in ~15 minutes (never run in this repository yet: no GPU was available).
    "gpu-small": TrainConfig(steps=12000, batch_size=64, lr=6e-4, warmup=500, checkpoint_every=1000,
                             log_every=50, identity_loss_weight=0.05, bf16=True, compile=True,
                             model=dict(dim=256, depth=8, num_heads=8, identity_dim=256, num_identity_tokens=16)),
    # Only for the test suite: a few fast steps.
    "test-mini": TrainConfig(steps=12, batch_size=2, lr=1e-3, warmup=2, checkpoint_every=3, log_every=1,
                             model=dict(dim=32, depth=1, num_heads=2, identity_dim=32, num_identity_tokens=4)),
}


def step_generator(seed: int, step: int, device="cpu") -> torch.Generator:
    """The generator for everything random in one step: the same (seed, step) always gives the same batch."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + step)


@torch.no_grad()
def make_batch(cfg: TrainConfig, step: int, recognizer, device) -> dict:
    """Render one training batch for ``step`` and choose its conditions.

    Returns dict(frames (B,F,3,S,S), context (B,F,3,S,S) (frames, corrupted for some clips), given (B,F) bool,
    cuts (B,F) bool,
    masks (B,F,S,S), references (B,R,3,S,S), embeddings (B,R,512), use_identity (B,) bool,
    use_masks (B,) bool, noise (B,F,3,S,S), timesteps (B,)).
    """
    from labkit.synthfaces import make_clips, train_ids

    g = step_generator(cfg.seed, step)
    b, f, s = cfg.batch_size, cfg.num_frames, cfg.size
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
    embeddings = recognizer(refs.reshape(-1, 3, s, s).to(device)).reshape(b, refs.shape[1], -1)
    num_refs_used = torch.randint(1, cfg.num_refs + 1, (b,), generator=g)
    for i in range(b):  # 1..R references, so that the model sees identity from few and many references
        embeddings[i, num_refs_used[i]:] = embeddings[i, : num_refs_used[i]].mean(0, keepdim=True)
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


def compute_loss(model, scheduler, batch: dict, cfg: TrainConfig, recognizer=None):
    """Denoising loss (v-target, on frames that were not given) plus the optional identity loss.

    Returns (loss, dict of float terms).
    """
    x0, noise, t = batch["frames"], batch["noise"], batch["timesteps"]
    x_t = scheduler.add_noise(x0, noise, t)
    target = scheduler.get_velocity(x0, noise, t)
    tokens = model.encode_identity(batch["embeddings"])
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


def load_checkpoint(path) -> dict:
    """Read a training checkpoint (weights, optimizer, step, losses, config) with a clear error if corrupt."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - re-raised with the path named
        raise ValueError(f"training checkpoint {path} is corrupt or unreadable ({type(err).__name__}: {err})") from err


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)  # atomic: readers see the old file or the new one, never half of one


def plot_losses(losses: list, path, title: str = "training loss") -> Path:
    """Save the loss curve (raw and smoothed) as a PNG; returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(5, 3))
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
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def train(cfg: TrainConfig, out, resume: bool = True, progress: bool = True, change_schedule: bool = False) -> dict:
    """Train (or resume) a run in folder ``out``. Returns dict(model, losses, seconds, clips_per_second, ...).

    Resuming refuses a checkpoint written with other settings; ``change_schedule=True`` allows a different
    number of steps only (e.g. shortening a run that a busy CPU cannot finish), recorded in ``summary.json``.

    Writes ``out/checkpoint.pt`` every ``cfg.checkpoint_every`` steps and at the end, ``out/model``
    (save_pretrained, safetensors), ``out/loss.png`` and ``out/summary.json``.
    """
    from tqdm.auto import tqdm

    from labkit.common import get_device
    from labkit.faces import FaceRecognitionBackbone
    from labkit.model import IdentityVideoDiT
    from labkit.pipeline import make_scheduler

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = torch.device(cfg.device) if cfg.device else get_device()
    torch.manual_seed(cfg.seed)
    model = IdentityVideoDiT(sample_size=cfg.size, max_frames=cfg.num_frames, **cfg.model).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    # Linear warm-up, then cosine decay to 10% of the peak learning rate.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup)) * (
        0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, s / max(1, cfg.steps))))))
    step, losses, schedule_changes = 0, [], []
    ckpt_path = out / "checkpoint.pt"
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        saved = dict(state.get("config", {}))
        if change_schedule and saved.get("steps") != cfg.steps:
            print(f"changing the schedule of {ckpt_path}: {saved.get('steps')} -> {cfg.steps} steps "
                  f"from step {state['step']}")
            schedule_changes.append({"at_step": state["step"], "steps_before": saved.get("steps"),
                                     "steps_after": cfg.steps})
            saved["steps"] = cfg.steps
        _check_same_run(saved, cfg, ckpt_path)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["lr_scheduler"])
        step, losses = state["step"], state["losses"]
        schedule_changes = state.get("schedule_changes", []) + schedule_changes
        print(f"resumed from {ckpt_path} at step {step}")
    recognizer = FaceRecognitionBackbone(device=device)
    noise_scheduler = make_scheduler("ddpm")
    noise_scheduler.alphas_cumprod = noise_scheduler.alphas_cumprod.to(device)
    forward_model = torch.compile(model) if cfg.compile and device.type == "cuda" else model
    use_bf16 = cfg.bf16 and device.type == "cuda"

    def save(at_step):
        _save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict(),
                      "step": at_step, "losses": losses, "config": asdict(cfg),
                      "schedule_changes": schedule_changes}, ckpt_path)

    model.train()
    start, first_step = time.perf_counter(), step
    bar = tqdm(total=cfg.steps, initial=step, desc="training", disable=not progress)
    while step < cfg.steps:
        batch = make_batch(cfg, step, recognizer, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss, terms = compute_loss(forward_model, noise_scheduler, batch, cfg, recognizer)
        if cfg.fail_nan_at is not None and step == cfg.fail_nan_at:
            loss = loss * float("nan")
        if not torch.isfinite(loss):
            bar.close()
            raise FloatingPointError(f"loss is {loss.item()} at step {step}: training stopped. The last good "
                                     f"checkpoint ({ckpt_path}, step {state_step(ckpt_path)}) is kept; lower the "
                                     "learning rate or check the data, then run again to resume from it.")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        losses.append((step, terms["denoise"]))
        if step % cfg.log_every == 0:
            bar.set_postfix(loss=f"{sum(v for _, v in losses[-cfg.log_every:]) / cfg.log_every:.4f}")
        bar.update()
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save(step)
    bar.close()
    seconds = time.perf_counter() - start
    done = step - first_step
    model.eval()
    model.save_pretrained(out / "model")
    plot_losses(losses, out / "loss.png")
    first = sum(v for _, v in losses[:20]) / max(1, len(losses[:20]))
    last = sum(v for _, v in losses[-20:]) / max(1, len(losses[-20:]))
    summary = {"steps": step, "seconds_this_session": seconds,
               "clips_per_second": done * cfg.batch_size / seconds if seconds > 0 and done else None,
               "loss_first_20": first, "loss_last_20": last, "device": str(device),
               "threads": torch.get_num_threads(), "config": asdict(cfg), "schedule_changes": schedule_changes}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return {"model": model, "losses": losses, **summary}


# What may change between an interrupted run and its resumption without making it a different run.
_RESUMABLE_CHANGES = {"device", "num_threads", "log_every", "checkpoint_every", "fail_nan_at"}


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
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--checkpoint-every", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in --out")
    parser.add_argument("--change-schedule", action="store_true",
                        help="resume even though --steps differs from the checkpoint's (the LR schedule changes)")
    parser.add_argument("--fail-nan-at", type=int, help="simulate a NaN loss at this step (tests, demos)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = PRESETS[args.preset]
    overrides = {"steps": args.steps, "batch_size": args.batch_size, "checkpoint_every": args.checkpoint_every,
                 "seed": args.seed, "device": args.device, "num_threads": args.threads,
                 "fail_nan_at": args.fail_nan_at}
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    try:
        out = args.out or f"runs/{args.preset}"
        result = train(cfg, out, resume=not args.fresh, progress=not args.no_progress,
                       change_schedule=args.change_schedule)
    except (FloatingPointError, ValueError) as err:
        print(f"ERROR: {err}")
        raise SystemExit(2) from err
    print(f"done: {result['steps']} steps, loss {result['loss_first_20']:.4f} -> {result['loss_last_20']:.4f}, "
          f"{result['clips_per_second'] or 0:.1f} clips/s on {result['device']}; model in {Path(out) / 'model'}")


if __name__ == "__main__":
    main()
