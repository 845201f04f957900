"""The drift benchmark and the speed benchmark of the shipped checkpoint.

    python -m labkit.bench drift --out outputs/bench [--quick]   # figures JSON, PNG plots, a video
    python -m labkit.bench speed [--device cuda]                   # training clips/s, sampling s/clip, MFU

The drift benchmark runs :class:`labkit.pipeline.ReferenceConditionedGenerator` on held-out identities
(``synthfaces.test_ids``) and scores every frame with ``labkit.metrics.identity_scores`` (1 = as
recognisable as a real frame, 0 = a stranger or not a face). Scoring uses references rendered separately
from the ones the generator is given, so copying the keyframe is not rewarded more than keeping the
identity. Sections: references only (``keyframe=False``: the person drawn from pure noise), with top-1
identification among the identities; the four strategies over 8 chunks with a cut between chunks; an
identity_strength sweep 0..1.5 from the references alone (identity against variety); 1..5 references;
degraded references (noise, blur); two-character scenes with and without separators and with region
routing (bleed, swap rate). Every comparison is a paired difference over identities with its standard
error.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from labkit.common import QUICK, get_device, image_strip, save_video
from labkit.drift import DEGRADATIONS, STRATEGIES, DriftEngine, degrade
from labkit.faces import FaceRecognitionBackbone
from labkit.metrics import (
    bleed_and_swap,
    embed_frames,
    identification_top1,
    mean_and_se,
    paired_difference,
    scene_similarity,
    summarise_scores,
    variety,
)
from labkit.model import IdentityVideoDiT
from labkit.pipeline import ReferenceConditionedGenerator, frames_for_chunks, make_scheduler
from labkit.synthfaces import make_clips, make_scenes, test_ids
from labkit.train import PRESETS, compute_loss, make_batch, make_image_batch

__all__ = ["STRENGTHS", "DEGRADATIONS", "degrade", "frames_for_chunks", "Bench", "run_scenes", "run_bench",
           "print_table", "speed", "main"]

STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)


class Bench(DriftEngine):
    """One benchmark run: the drift engine (generator, recognizer) with the benchmark's identities, references
    and settings. Videos are made with :meth:`DriftEngine.sample` and scored with :meth:`DriftEngine.measure`,
    as the DriftLab makes and scores them."""

    def __init__(self, quick: bool, device=None, checkpoint=None, seed: int = 0):
        super().__init__(device=device or "cpu", steps=10 if quick else 20, model_path=checkpoint, num_threads=None)
        self.quick, self.seed = quick, seed
        self.num_chunks = 8
        self.num_frames = frames_for_chunks(self.num_chunks, self.max_frames)
        self.ids = test_ids(4 if quick else 12)
        g = torch.Generator().manual_seed(seed)
        given = make_clips(self.ids, num_frames=self.num_frames, size=self.size, num_refs=5, num_cuts=7, generator=g)
        scoring = make_clips(self.ids, num_frames=1, size=self.size, num_refs=3, generator=g)
        self.references, self.layout = given.references, given.masks  # (B, 5, 3, S, S), (B, F, S, S)
        self.real = given  # real clips of the same identities: the variety a real video has
        self.score_images = scoring.references  # (B, 3, 3, S, S): scored against, never given to the model
        # The control for references-only frames: references of a look-alike of each person (the person's
        # colours, hair and accessories on another face). A model that copies only the look scores as high
        # against them as against the person's own.
        others = test_ids(len(self.ids), offset=60_000)
        self.lookalike_images = make_clips(others, num_frames=1, size=self.size, num_refs=3, generator=g,
                                           look_from=self.ids).references

    def score(self, frames, cuts=None, chunk_starts=None) -> dict:
        """identity_scores of generated frames (B, F, 3, S, S) against the scoring references, summarised."""
        scores, parts = self.measure(frames, self.score_images)
        return summarise_scores(scores, parts["face_probability"], parts["embeddings"], frames, cuts,
                                chunk_starts=chunk_starts)

    def run(self, num_refs=3, strength=0.8, strategy="explicit", num_chunks=None, refs=None, keyframe=True, **kw):
        """Generate one batch of videos (all identities at once) and score them."""
        num_frames = frames_for_chunks(num_chunks or self.num_chunks, self.max_frames)
        refs = self.references[:, :num_refs] if refs is None else refs
        out = self.sample(refs, num_frames, self.seed + 1, self.layout[:, :num_frames], identity_strength=strength,
                          strategy=strategy, keyframe=keyframe, **kw)
        frames = out.frames.cpu()
        return self.score(frames, out.cuts, out.chunk_starts), frames

    def references_only(self, strategy: str, guidance: float = 2.0) -> tuple[dict, torch.Tensor]:
        """One frame of each identity from pure noise and its references alone, with top-1 identification."""
        out = self.sample(self.references[:, :3], 1, self.seed + 5, self.layout[:, :1], keyframe=False,
                          strategy=strategy, identity_strength=1.0, identity_guidance=guidance)
        frames = out.frames.cpu()
        figures = self.score(frames)
        n = min(8, len(frames))  # the course's yardstick: top-1 among 8 people (chance 1/8)
        figures["top1"] = identification_top1(frames[:n], self.score_images[:n], self.recognizer)
        figures["top1_among"] = n
        against = self.measure(frames, self.lookalike_images)[0].mean(1)  # (B,)
        figures["against_lookalike"] = against.mean().item()
        figures["own_minus_lookalike"], figures["own_minus_lookalike_se"] = mean_and_se(
            torch.tensor(figures["per_video"]) - against)
        return figures, frames


SCENE_VARIANTS = ("no separators", "separators", "separators + routing")


@torch.no_grad()
def run_scenes(bench: Bench, num_scenes: int, num_chunks: int = 3) -> dict:
    """Two characters side by side: bleed and swap rate with and without separators, and with region routing.

    The keyframe is the real scene's first frame; identity tokens are the two characters' tokens one after
    the other (``identity_tokens``), identity attention is limited to the union of the face masks. The shipped
    model was trained on one character per clip and has no learned separator: here a separator is a zero
    token after each character's tokens. Routing limits each face region to its own character's tokens.
    Scored against separately rendered references of each character, per face region.
    """
    model, rec, encoder = bench.pipe.model, bench.recognizer, bench.pipe.recognizer
    ids = test_ids(2 * num_scenes, offset=200).view(num_scenes, 2)
    num_frames = frames_for_chunks(num_chunks, bench.max_frames)
    g = torch.Generator().manual_seed(bench.seed + 2)
    scenes = make_scenes(ids, num_frames=num_frames + 1, size=bench.size, num_refs=3, generator=g)
    scoring = make_clips(ids.reshape(-1), num_frames=1, size=bench.size, num_refs=3, generator=g).references
    score_emb = embed_frames(rec, scoring).reshape(num_scenes, 2, 3, -1)
    layout = scenes.masks[:, 1:]  # (B, F, 2, S, S): where each character's face is in the generated frames
    emb = embed_frames(encoder, scenes.references.flatten(0, 1)).reshape(num_scenes, 2, 3, -1)  # (B, 2, R, 512)
    emb = emb.to(model.device)
    tokens = [model.encode_identity(emb[:, c]) for c in range(2)]
    t = tokens[0].shape[1]
    null = torch.zeros_like(tokens[0][:, :1])
    variants = {
        "no separators": (torch.cat(tokens, 1), torch.arange(2).repeat_interleave(t), False),
        "separators": (torch.cat([tokens[0], null, tokens[1], null], 1), torch.arange(2).repeat_interleave(t + 1),
                       False),
        "separators + routing": (torch.cat([tokens[0], null, tokens[1], null], 1),
                                 torch.arange(2).repeat_interleave(t + 1), True),
    }
    real = scene_similarity(rec, scenes.frames[:, 1:], layout, score_emb)
    results = {"num_scenes": num_scenes, "num_frames": num_frames, "real_scenes": bleed_and_swap(real)}
    frames_out = {}
    for name, (tok, owner, routed) in variants.items():
        out = bench.sample(scenes.frames[:, :1], num_frames, bench.seed + 3, layout.amax(2), strategy="face_aware",
                           identity_strength=0.8, identity_tokens=tok, token_character=owner,
                           character_masks=layout if routed else None)
        frames = out.frames.cpu()
        sim = scene_similarity(rec, frames, layout, score_emb)
        last = out.chunk_starts[-1]
        results[name] = {**bleed_and_swap(sim), "last_chunk": bleed_and_swap(sim[:, last:])}
        frames_out[name] = frames
    return results, frames_out


def _plot(xs, series: dict, xlabel, ylabel, title, xticks=None, ylim=(-0.1, 1.05), errors: dict | None = None):
    """A line plot with fixed y axes (identity scores on 0..1, so a 0.003 difference looks like one), as a
    Figure (no pyplot, no backend switch)."""
    fig = Figure(figsize=(5.5, 3.4))
    ax = fig.subplots()
    for name, ys in series.items():
        err = (errors or {}).get(name)
        ax.errorbar(xs[: len(ys)], ys, yerr=err, marker="o", capsize=3, label=name)
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    if xticks is not None:
        ax.set_xticks(range(len(xticks)), xticks, fontsize=8)
    ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def run_bench(out="outputs/bench", quick=False, device=None, checkpoint=None, seed=0) -> dict:
    """Run every section, write ``bench.json``, PNG plots and ``strategies.mp4`` (or .gif) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    bench = Bench(quick, device, checkpoint, seed)
    results = {"quick": quick, "num_identities": len(bench.ids), "num_frames": bench.num_frames,
               "num_chunks": bench.num_chunks, "steps": bench.steps,
               "checkpoint": str(checkpoint or "shipped (data/identity_video_dit)")}
    results["real_clips"] = {**bench.score(bench.real.frames, bench.real.cuts),
                             "variety": variety(bench.real.frames, bench.real.cuts).mean().item()}
    jobs = [("references_only", s) for s in ("explicit", "face_aware")]
    jobs += [("strategy", s) for s in STRATEGIES]
    jobs += [("strength", s) for s in (STRENGTHS[::2] if quick else STRENGTHS)]
    jobs += [("refs", r) for r in ((1, 3, 5) if quick else (1, 2, 3, 4, 5))]
    jobs += [("degraded", d) for d in (("clean", "noise 0.5", "blur 2") if quick else DEGRADATIONS)]
    sections = {"references_only": {}, "strategies": {}, "strength_sweep": {}, "num_references": {},
                "degraded_references": {}}
    videos, portraits = {}, {}
    short = 3  # chunks for the sweeps: enough for drift to start, cheap enough for many settings
    for kind, value in tqdm(jobs, desc="benchmark"):
        if kind == "references_only":
            sections["references_only"][value], portraits[value] = bench.references_only(value)
        elif kind == "strategy":
            fig, frames = bench.run(strategy=value, strength=1.0)
            sections["strategies"][value] = fig
            videos[value] = frames[0]
        elif kind == "strength":  # from the references alone, so the tokens are the only source of identity
            sections["strength_sweep"][str(value)] = bench.run(strength=value, num_chunks=short, keyframe=False)[0]
        elif kind == "refs":
            sections["num_references"][str(value)] = bench.run(num_refs=value, num_chunks=short, keyframe=False,
                                                               strength=1.0)[0]
        else:
            noise, blur = DEGRADATIONS[value]
            refs = degrade(bench.references[:, :3], noise, blur, seed)
            sections["degraded_references"][value] = bench.run(refs=refs, num_chunks=short, keyframe=False,
                                                               strength=1.0)[0]
    results.update(sections)
    strat = sections["strategies"]
    half = bench.num_chunks // 2
    results["effects"] = {
        **{f"{s} - implicit": paired_difference(strat[s], strat["implicit"]) for s in ("explicit", "face_aware",
                                                                                        "keyframe")},
        "strength 1.0 - 0": paired_difference(sections["strength_sweep"]["1.0"], sections["strength_sweep"]["0.0"]),
        "explicit, second half": sum(strat["explicit"]["per_chunk"][half:]) / (bench.num_chunks - half),
        "implicit, chunk 1 - chunk 8": strat["implicit"]["per_chunk"][0] - strat["implicit"]["per_chunk"][-1],
    }
    results["multi_character"], scene_frames = run_scenes(bench, num_scenes=4 if quick else 12)
    results["seconds"] = time.perf_counter() - start

    chunks = list(range(1, bench.num_chunks + 1))
    _plot(chunks, {k: v["per_chunk"] for k, v in strat.items()}, "chunk (a cut before each)", "identity score",
          f"Drift over {bench.num_chunks} chunks, {len(bench.ids)} held-out ids").savefig(out / "drift_per_chunk.png",
                                                                                          dpi=110)
    sweep = sections["strength_sweep"]
    real_variety = results["real_clips"]["variety"]
    _plot([float(k) for k in sweep],
          {"identity score": [v["identity_score"] for v in sweep.values()],
           "variety / real variety": [v["variety"] / real_variety for v in sweep.values()]},
          "identity_strength", "score", "Identity vs variety (explicit, references only)",
          errors={"identity score": [v["identity_score_se"] for v in sweep.values()]},
          ylim=(-0.1, 1.5)).savefig(out / "strength_sweep.png", dpi=110)
    refs = sections["num_references"]
    _plot([int(k) for k in refs], {"identity score": [v["identity_score"] for v in refs.values()]}, "references",
          "identity score", "More references (references only)",
          errors={"identity score": [v["identity_score_se"] for v in refs.values()]}).savefig(
        out / "num_references.png", dpi=110)
    deg = sections["degraded_references"]
    _plot(list(range(len(deg))), {"identity score": [v["identity_score"] for v in deg.values()]}, "reference quality",
          "identity score", "Degraded references (references only)", xticks=list(deg),
          errors={"identity score": [v["identity_score_se"] for v in deg.values()]}).savefig(
        out / "degraded_references.png", dpi=110)
    _bars(results["multi_character"]).savefig(out / "multi_character.png", dpi=110)
    # Row 0: the keyframe reference; then every 7th frame (about one per chunk) of each strategy.
    rows = [bench.references[0, :1].expand(7, -1, -1, -1)] + [videos[s][::7] for s in STRATEGIES]
    _strip(rows, "the reference, then every 7th frame (about one per chunk)",
           labels=["reference", *STRATEGIES]).savefig(out / "strategies.png", dpi=100)
    _strip([bench.references[:, 0], portraits["explicit"][:, 0], portraits["face_aware"][:, 0]],
           "references only: each column one held-out person, drawn from pure noise",
           labels=["reference", "explicit", "face_aware"]).savefig(out / "references_only.png", dpi=100)
    grid = torch.cat([videos[s] for s in STRATEGIES], dim=-1)  # side by side: (F, 3, S, 4S)
    results["video"] = str(save_video(grid, out / "strategies.mp4", fps=6, scale=3))
    (out / "bench.json").write_text(json.dumps(results, indent=2))
    return results


def _strip(rows: list, title: str, labels: list | None = None):
    """Rows of frames (N, 3, S, S) as one Figure, each row named on the left by ``labels``."""
    n = min(len(r) for r in rows)
    strip = image_strip(torch.cat([r[:n] for r in rows]), ncols=n)
    fig = Figure(figsize=(1.0 * n + 1.5, 1.0 * len(rows) + 0.6))
    ax = fig.subplots()
    ax.imshow(strip, interpolation="nearest")
    row_height = strip.shape[0] / len(rows)
    ax.set_yticks([row_height * (i + 0.5) for i in range(len(rows))], labels or [""] * len(rows))
    ax.set_xticks([])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def _bars(scenes: dict):
    """Own-identity score, bleed and swap rate per scene variant, real scenes first, as a Figure."""
    names = ["real_scenes", *SCENE_VARIANTS]
    fig = Figure(figsize=(6, 3.4))
    ax = fig.subplots()
    width = 0.27
    for i, key in enumerate(("own", "bleed", "swap_rate")):
        ax.bar([j + (i - 1) * width for j in range(len(names))], [scenes[n][key] for n in names], width, label=key)
    ax.set_xticks(range(len(names)), [n.replace("_", " ").replace(" + ", "\n+ ") for n in names], fontsize=8)
    ax.set_ylim(-0.1, 1.05)
    ax.set_title("Two characters: own identity, bleed, swaps")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def print_table(results: dict) -> None:
    """The benchmark's figures as plain text: each comparison with its standard error over identities."""
    n = results["num_identities"]
    print(f"{n} held-out identities; identity_scores (1 = a real frame of the person, 0 = a stranger or no face)")
    print(f"real clips: score {results['real_clips']['identity_score']:.3f}, variety "
          f"{results['real_clips']['variety']:.3f}")
    for name, f in results["references_only"].items():
        print(f"references only, {name:<10}: score {f['identity_score']:.3f} +- {f['identity_score_se']:.3f}, "
              f"top-1 among {f['top1_among']} {f['top1']:.2f}, face quality {f['face_quality']:.2f}; against a "
              f"look-alike's references {f['against_lookalike']:.3f} (own - look-alike "
              f"{f['own_minus_lookalike']:+.3f} +- {f['own_minus_lookalike_se']:.3f})")
    print(f"{results['num_frames']} frames in {results['num_chunks']} chunks with cuts, from a keyframe:")
    print(f"{'strategy':<11} {'score':>6} {'+-se':>6} {'chunk1':>7} {'chunk8':>7} {'faces':>6} {'subj.':>6} "
          f"{'>=0.5':>6} {'variety':>7}")
    for name, f in results["strategies"].items():
        pc = f["per_chunk"]
        print(f"{name:<11} {f['identity_score']:6.3f} {f['identity_score_se']:6.3f} {pc[0]:7.3f} {pc[-1]:7.3f} "
              f"{f['face_quality']:6.2f} {f['subject_consistency']:6.3f} {f['share_above']:6.2f} {f['variety']:7.3f}")
    for name, effect in results["effects"].items():
        text = f"{effect[0]:+.3f} +- {effect[1]:.3f}" if isinstance(effect, (list, tuple)) else f"{effect:.3f}"
        print(f"  {name}: {text}")
    for title, key in (("strength (references only)", "strength_sweep"), ("references", "num_references"),
                       ("reference quality", "degraded_references")):
        row = ", ".join(f"{k}: {v['identity_score']:.3f}+-{v['identity_score_se']:.3f} (var {v['variety']:.3f})"
                        for k, v in results[key].items())
        print(f"{title}: {row}")
    mc = results["multi_character"]
    print(f"two characters ({mc['num_scenes']} scenes): " + "; ".join(
        f"{k}: own {mc[k]['own']:.3f} bleed {mc[k]['bleed']:.3f} swap {mc[k]['swap_rate']:.2f}"
        for k in ("real_scenes", *SCENE_VARIANTS)))


def speed(device=None, steps: int = 4, preset: str = "cpu-ship") -> dict:
    """Training clips per second (preset's batch) and sampling seconds per 16-frame clip, on ``device``.

    On a CUDA device it also reports model FLOP/s in bf16 and the model FLOPs utilisation against the GPU's
    dense bf16 peak (known for A100/H100/H200/L4/T4; otherwise n/a).
    """
    device = torch.device(device) if device else get_device()
    cfg = replace(PRESETS[preset], device=str(device))
    model = IdentityVideoDiT(sample_size=cfg.size, max_frames=cfg.num_frames, **cfg.model).to(device)
    recognizer = FaceRecognitionBackbone(device=device)
    sched = make_scheduler("ddpm")
    sched.alphas_cumprod = sched.alphas_cumprod.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    use_bf16 = device.type == "cuda"
    flops = None

    def median_step_seconds(make):
        nonlocal flops
        times = []
        for i in range(steps + 1):
            t0 = time.perf_counter()
            batch = make(cfg, i, recognizer, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                if i == 1 and device.type == "cuda" and make is make_batch:
                    with FlopCounterMode(display=False) as counter:
                        loss, _ = compute_loss(model, sched, batch, cfg, recognizer)
                        loss.backward()
                    flops = counter.get_total_flops()
                else:
                    loss, _ = compute_loss(model, sched, batch, cfg, recognizer)
                    loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t0)
        return sorted(times)[len(times) // 2]

    image_s, step_s = median_step_seconds(make_image_batch), median_step_seconds(make_batch)
    result = {"device": str(device), "threads": torch.get_num_threads(), "preset": preset,
              "train_images_per_s": cfg.image_batch_size / image_s, "train_image_step_s": image_s,
              "train_clips_per_s": cfg.batch_size / step_s, "train_step_s": step_s}
    if flops:
        peak = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "T4": 65e12}
        name = torch.cuda.get_device_name(device)
        p = next((v for k, v in peak.items() if k in name), None)
        result["model_tflops_per_s"] = flops / step_s / 1e12
        result["mfu_bf16"] = flops / step_s / p if p else None
    pipe = ReferenceConditionedGenerator(model.eval(), make_scheduler("ddim"), recognizer=recognizer)
    refs = torch.zeros(1, 3, 3, cfg.size, cfg.size)
    pipe.generate(reference_images=refs, num_frames=7, num_inference_steps=2, check_faces=False, progress=False)
    for init_strength in (1.0, 0.7):  # from pure noise (20 steps a chunk); SDEdit-style starts (14 steps)
        t0 = time.perf_counter()
        out = pipe.generate(reference_images=refs, num_frames=16, num_inference_steps=20, check_faces=False,
                            progress=False, init_strength=init_strength,
                            generator=torch.Generator(device="cpu").manual_seed(0))
        if device.type == "cuda":
            torch.cuda.synchronize()
        result[f"sample_s_per_16_frames_init_{init_strength}"] = time.perf_counter() - t0
    result["sample_chunks_per_16_frames"] = len(out.chunk_starts)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description="Drift and speed benchmarks of the shipped checkpoint")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("drift", aliases=["bench"], help="drift benchmark: JSON, PNG plots, a video")
    b.add_argument("--out", default="outputs/bench")
    b.add_argument("--quick", action="store_true", help="fewer identities and settings (also LABKIT_QUICK=1)")
    b.add_argument("--checkpoint", help="an IdentityVideoDiT folder (default: the shipped one)")
    b.add_argument("--device")
    b.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a busy CPU)")
    s = sub.add_parser("speed", help="training clips/s and sampling seconds per 16-frame clip")
    s.add_argument("--device")
    s.add_argument("--preset", default="cpu-ship")
    s.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.command in ("drift", "bench"):
        results = run_bench(args.out, quick=args.quick or QUICK, device=args.device, checkpoint=args.checkpoint)
        print_table(results)
        print(f"wrote {args.out}/bench.json, PNG plots and {results['video']} in {results['seconds']:.0f} s")
    else:
        r = speed(args.device, preset=args.preset)
        print(f"device {r['device']} ({r['threads']} threads), preset {r['preset']}")
        print(f"training, single frames: {r['train_images_per_s']:.0f} images/s ({r['train_image_step_s']:.2f} s per "
              f"step); clips: {r['train_clips_per_s']:.1f} clips/s ({r['train_step_s']:.2f} s per step)")
        print(f"sampling: {r['sample_s_per_16_frames_init_1.0']:.2f} s per 16-frame clip from pure noise "
              f"({r['sample_chunks_per_16_frames']} chunks x 20 DDIM steps); "
              f"{r['sample_s_per_16_frames_init_0.7']:.2f} s with init_strength 0.7 (14 steps a chunk)")
        if "model_tflops_per_s" in r:
            mfu = "n/a" if r["mfu_bf16"] is None else f"{100 * r['mfu_bf16']:.1f}%"
            print(f"model FLOP/s (bf16): {r['model_tflops_per_s']:.1f} TFLOP/s, MFU {mfu}")


if __name__ == "__main__":
    main()
