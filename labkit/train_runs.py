"""What is built on :func:`labkit.train.train`: the command line, and runs that time or compare training.

    python -m labkit.train --preset cpu-tiny --out runs/tiny      # the command line (main)
    python -m labkit.train --preset gpu-small --estimate          # estimate_run_seconds
    python -m labkit.train --preset smoke --compare-processes 1 2 # compare_processes
    python -m labkit.train --evaluate runs/cpu-learner/model      # references-only top-1 over 32 people

:func:`compare_token_designs` trains the cpu-tiny model once per identity-token design (notebook 04).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from accelerate import PartialState

from labkit.common import get_device
from labkit.faces import FaceRecognitionBackbone
from labkit.model import IdentityVideoDiT, load_model
from labkit.pipeline import make_scheduler
from labkit.train import PRESETS, TrainConfig, compute_loss, make_batch, make_image_batch, train
from labkit.train_monitor import evaluate_references_only, export_run

__all__ = ["main", "estimate_run_seconds", "compare_token_designs", "compare_processes"]


def estimate_run_seconds(cfg: TrainConfig, device="cpu", probe_images: int = 4, probe_clips: int = 1) -> dict:
    """How long ``cfg`` would train on ``device``, from one timed single-frame step and one timed clip step at
    a small batch (``probe_images`` frames, ``probe_clips`` clips) scaled linearly to the preset's batches and
    step counts. A rough figure (a bigger batch uses the hardware a little better), but it needs seconds, not
    the run itself. Returns dict(image_step_s, clip_step_s, image_steps, clip_steps, total_s)."""
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
    base = PRESETS["cpu-tiny"]
    out = {}
    for design in designs:
        cfg = replace(base, steps=steps, image_steps=steps, monitor_every=steps, checkpoint_every=steps, seed=seed,
                      warmup=min(base.warmup, steps // 4), model={**base.model, "identity_token_design": design})
        with tempfile.TemporaryDirectory() as folder:
            train(cfg, folder, resume=False, progress=progress)
            out[design] = json.loads((Path(folder) / "monitor.json").read_text())
    return out



def compare_processes(preset: str, out, processes=(1, 2), extra_args=()) -> str:
    """Train ``preset`` on the CPU once per entry of ``processes`` under ``accelerate launch --num_processes N``
    (the same global batch each time, a fresh folder ``out/processes-N``) and return a table of their speeds
    from each run's ``summary.json``. On a CPU, processes share its cores: expect DDP's overhead, not a gain."""
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
    parser.add_argument("--lr", type=float, help="override the preset's peak learning rate")
    parser.add_argument("--identity-loss-weight", type=float, help="override the identity loss's weight (0: off)")
    parser.add_argument("--identity-loss-max-t", type=int, help="the identity loss applies below this timestep")
    parser.add_argument("--evaluate", metavar="MODEL_DIR", help="do not train: draw 4 groups of 8 held-out people "
                        "from their references alone, 4 pictures each, and print top-1 among 8 and the identity "
                        "score (labkit.train_monitor.evaluate_references_only)")
    parser.add_argument("--export", metavar="DIR", help="after training, write the model in fp16 with its "
                        "training.json to DIR (how data/identity_video_dit is made)")
    args = parser.parse_args(argv)
    for flag, value, low, high in (("--lr", args.lr, 1e-8, 1.0), ("--identity-loss-weight", args.identity_loss_weight,
                                    0.0, 100.0), ("--identity-loss-max-t", args.identity_loss_max_t, 1, 1000),
                                   ("--steps", args.steps, 1, 10**9), ("--batch-size", args.batch_size, 1, 4096),
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
                 "seed": args.seed, "device": args.device, "num_threads": args.threads, "lr": args.lr,
                 "identity_loss_weight": args.identity_loss_weight, "identity_loss_max_t": args.identity_loss_max_t}
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    if args.evaluate:
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        try:
            model = load_model(args.evaluate, device=cfg.device or get_device())
        except ValueError as err:
            parser.error(f"argument --evaluate: {err}")
        e = evaluate_references_only(model, FaceRecognitionBackbone(device=model.device),
                                     progress=not args.no_progress)
        print(f"{args.evaluate}: references only, {e['pictures']} pictures of 32 held-out people: top-1 among 8 "
              f"{e['top1']:.3f} (groups {' '.join(f'{t:.2f}' for t in e['top1_per_group'])}), identity score "
              f"{e['score']:.3f}, face probability {e['face_probability']:.2f}")
        return
    if args.estimate:
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
        command = "python -m labkit.train " + " ".join(sys.argv[1:] if argv is None else argv)
        print(f"exported to {export_run(out, args.export, command)}")


