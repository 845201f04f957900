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

The run's settings are in ``labkit.train_config``, checkpoint files in ``labkit.checkpoints``, the monitor and
plots in ``labkit.train_monitor``; the command line and the runs built on :func:`train` (time estimate,
comparisons) in ``labkit.train_runs``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import extract_model_from_parallel
from PIL import Image
from tqdm.auto import tqdm

from labkit.checkpoints import check_same_run, load_checkpoint, save_atomic, state_step, write_json_atomic
from labkit.common import get_device, image_strip
from labkit.faces import FaceRecognitionBackbone
from labkit.model import IdentityVideoDiT
from labkit.pipeline import make_scheduler
from labkit.synthfaces import make_clips, train_ids
from labkit.train_config import PRESETS, TrainConfig
from labkit.train_monitor import MONITOR_IDS, cpu_name, export_run, monitor, plot_losses, plot_monitor

# The last three names live in labkit.train_runs, which builds on this module; __getattr__ at the end
# reaches them (and main), so they import from here as well.
__all__ = ["TrainConfig", "PRESETS", "make_batch", "make_image_batch", "is_image_step", "train", "load_checkpoint",  # noqa: F822
           "plot_losses", "monitor", "plot_monitor", "export_run", "make_accelerator", "step_generator", "shard_size",
           "compare_token_designs", "estimate_run_seconds", "compare_processes"]


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
        # Imported here: labkit.losses pulls in torchvision (about a second), which only this loss term needs.
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


def make_accelerator(cfg: TrainConfig):
    """The run's :class:`accelerate.Accelerator`: one process (CPU, CUDA or MPS) or one of several under
    ``accelerate launch`` (DDP over gloo on CPUs, NCCL on GPUs), bf16 mixed precision and torch.compile on CUDA
    only, ``cfg.grad_accum`` micro-batches per optimizer step."""
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
        check_same_run(saved, cfg, ckpt_path)
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
            save_atomic({"model": model.state_dict(), "optimizer": opt.optimizer.state_dict(),
                          "lr_scheduler": sched.state_dict(), "step": at_step, "losses": losses,
                          "config": asdict(cfg), "processes": world, "schedule_changes": schedule_changes},
                         ckpt_path)

    def check_in(at_step):
        m = monitor(model, recognizer, cfg)
        model.train()
        records.append({"step": at_step, **{k: v for k, v in m.items() if not torch.is_tensor(v)}})
        write_json_atomic(records, monitor_path)
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
                         "device": str(device), "cpu": cpu_name()})
        write_json_atomic(sessions, sessions_path)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return {"model": model, "losses": losses, **summary}




# Built on this module (they import it), so reached lazily: ``from labkit.train import main`` and
# ``python -m labkit.train`` work as they always have.
_BUILT_ON_TRAIN = ("main", "estimate_run_seconds", "compare_token_designs", "compare_processes")


def __getattr__(name):
    if name in _BUILT_ON_TRAIN:
        import labkit.train_runs

        return getattr(labkit.train_runs, name)
    raise AttributeError(f"module 'labkit.train' has no attribute {name!r}")


if __name__ == "__main__":
    from labkit.train_runs import main

    main()
