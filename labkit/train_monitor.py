"""Watching a training run: the identity monitor, its plots, the loss curve and the exported record.

:func:`monitor` measures whether the model uses its identity tokens (token spread across faces, swap
sensitivity, a references-only sample of held-out people scored with ``labkit.metrics``); :func:`plot_monitor`
and :func:`plot_losses` draw a run's records as matplotlib Figures built without pyplot. :func:`export_run`
writes a finished run's model with its record (how data/identity_video_dit is made).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from matplotlib.figure import Figure

from labkit.checkpoints import load_checkpoint
from labkit.metrics import identification_top1, identity_scores
from labkit.model import load_model
from labkit.pipeline import ReferenceConditionedGenerator, make_scheduler
from labkit.synthfaces import make_clips, test_ids
from labkit.train_config import TrainConfig

__all__ = ["monitor", "evaluate_references_only", "plot_monitor", "plot_losses", "export_run", "cpu_name",
           "MONITOR_IDS"]


def plot_losses(losses: list, path=None, title: str = "training loss"):
    """The loss curve (raw and smoothed) as a matplotlib Figure; saved as PNG when ``path`` is given.

    Built without pyplot, so it never touches the notebook's backend: a cell that returns it shows it.
    """
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
    own references, and how often its best match among the 8 reference sets is its own. ``recognizer`` is the
    identity encoder the model is conditioned on; the scores come from the scoring recognizer
    (``faces.load_recognizer()``), so the model is not judged by the network that makes its tokens.
    Returns the figures and ``samples`` (8, 3, S, S) next to ``references`` (8, 3, S, S).
    """
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
    scores = identity_scores(samples.cpu(), refs)  # judged by the scoring recognizer, not the encoder
    model.train(was_training)
    return {"token_spread": spread, "swap_sensitivity": swap, "score": scores.mean().item(),
            "top1": identification_top1(samples.cpu(), refs), "samples": samples[:, 0].cpu(),
            "references": refs[:, 0]}


@torch.no_grad()
def evaluate_references_only(model, recognizer, groups: int = 4, per_person: int = 4, guidance: float = 2.0,
                             num_inference_steps: int = 20, progress: bool = True) -> dict:
    """Top-1 among 8 and the identity score of references-only pictures, over ``groups`` groups of 8 held-out
    people (``test_ids(8 * groups)``; group 0 is notebook 08's 8), ``per_person`` pictures each.

    The monitor draws one picture per person, so its top-1 moves in steps of 1/8; this is the figure to compare
    runs with. Returns dict(top1, score, face_probability (the scorer's face check; the score is multiplied by
    it): means over groups, top1_per_group, score_per_group, pictures: how many were drawn)."""
    from tqdm.auto import tqdm

    from labkit.faces import load_recognizer

    scorer = load_recognizer()
    pipe = ReferenceConditionedGenerator(model.eval(), make_scheduler("ddim"), recognizer)
    top1, scores, faces = [], [], []
    for group in tqdm(range(groups), desc="groups of 8", disable=not progress):
        ids = test_ids(8 * groups)[8 * group: 8 * (group + 1)]
        refs = make_clips(ids, num_frames=1, size=model.config.sample_size, num_refs=3,
                          generator=torch.Generator().manual_seed(group)).references
        out = pipe.generate(reference_images=refs.repeat_interleave(per_person, 0), num_frames=1, keyframe=False,
                            strategy="explicit", identity_strength=1.0, identity_guidance=guidance,
                            num_inference_steps=num_inference_steps, check_faces=False, progress=False,
                            generator=torch.Generator().manual_seed(group))
        frames = out.frames.cpu().reshape(8, per_person, *out.frames.shape[2:])
        top1.append(identification_top1(frames, refs, scorer))
        score, parts = identity_scores(frames, refs, scorer, return_parts=True)
        scores.append(score.mean().item())
        faces.append(parts["face_probability"].mean().item())
    mean = lambda xs: sum(xs) / len(xs)
    return {"top1": mean(top1), "score": mean(scores), "face_probability": mean(faces), "top1_per_group": top1,
            "score_per_group": scores, "pictures": groups * 8 * per_person}


def plot_monitor(records: list, path=None):
    """The monitor's figures over training (references-only score and top-1, token spread, swap sensitivity)
    as a Figure with fixed axes; saved as PNG when ``path`` is given."""
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




def cpu_name() -> str:
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
    run_dir, dest = Path(run_dir), Path(dest)
    model = load_model(run_dir / "model")
    model.half().save_pretrained(dest)
    state = load_checkpoint(run_dir / "checkpoint.pt")
    losses = state["losses"]
    sessions_path, summary_path = run_dir / "wall_time.json", run_dir / "summary.json"
    if sessions_path.exists():
        sessions = json.loads(sessions_path.read_text())
    else:  # no per-session record: the run's summary stands for its one session
        summary = json.loads(summary_path.read_text())
        sessions = [{"end_step": summary["steps"], "seconds": summary["seconds_this_session"],
                     "image_steps": summary.get("image_steps"), "clip_steps": summary.get("clip_steps"),
                     "threads": summary["threads"], "device": summary["device"], "cpu": cpu_name(),
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


