"""Synthetic cartoon faces with known identity: the lab's world (notebook 02).

Every face is drawn from implicit shapes (ellipses, superellipses, rings, boxes) whose signed distance
in pixels goes through a smoothstep one pixel wide, so edges are anti-aliased even at 64x64. Rendering
is vectorised torch: a whole batch is a few dozen tensor operations, on the CPU or the GPU.

Identity and nuisance are kept apart:

* **Identity traits** come from the integer id alone (a hash of the id, no RNG state), so id 7 is the
  same person on every machine and device: face shape, width and jaw, skin tone, hair style and colour,
  eye size, spacing and iris colour, brow thickness, angle and colour, nose length and width, mouth
  width and lip colour, ears, glasses, beard, moustache, earrings, mole, freckles. Geometry ranges are
  wide enough that two people with the same colours and hair still look like two people.
* **Nuisances** are sampled per image: yaw, pitch and roll, smile, open mouth, raised brows, blink,
  lighting direction and strength, background colours, gradient and shapes, camera zoom and shift, and
  the shirt (clothing is not identity: it may change at a cut).

Identity ids: TRAIN ids are ``0 <= id < 1_000_000`` (:func:`train_ids`), TEST (held-out) ids are
``id >= 1_000_000`` (:func:`test_ids`). The two sets never overlap, so a recognizer trained on train ids
is measured on people it has never seen.

Layouts: images (N, 3, H, W) in [-1, 1]; masks (N, H, W) in [0, 1] (the coverage of the face shape,
the same coverage used to composite the image, so masks are exact); clips (B, F, 3, H, W).
Positive yaw turns the face towards the viewer's right.

This module is the world's public face. The work is done in :mod:`labkit.synth_traits` (ids, traits,
nuisances), :mod:`labkit.synth_drawing` (the renderer and its style tables) and :mod:`labkit.synth_clips`
(clips, scenes, the dataset); their public names are all importable from here.
"""

from __future__ import annotations

import argparse
import time

import torch
from PIL import Image

from labkit.common import image_strip
from labkit.synth_clips import Clip, ClipBatch, ClipDataset, SceneBatch, make_clip, make_clips, make_scenes
from labkit.synth_drawing import character_layers, render
from labkit.synth_styles import HAIR_STYLE_SHAPES, HAIR_STYLES, HairStyle
from labkit.synth_traits import (
    LOOK_TRAITS,
    TRAIN_ID_LIMIT,
    as_ids,
    identity_traits,
    sample_nuisances,
    test_ids,
    train_ids,
)

__all__ = ["TRAIN_ID_LIMIT", "HAIR_STYLES", "HAIR_STYLE_SHAPES", "HairStyle", "LOOK_TRAITS", "train_ids",
           "test_ids", "identity_traits", "sample_nuisances", "render", "render_faces", "character_layers",
           "Clip", "ClipBatch", "SceneBatch", "make_clips", "make_clip", "make_scenes", "ClipDataset",
           "identity_grid", "benchmark", "main"]


def render_faces(ids, size: int = 64, generator=None, device=None, **nuisance_overrides):
    """Faces of identities ``ids`` (N,) with random nuisances -> (images (N,3,H,W) in [-1,1], masks (N,H,W))."""
    ids = as_ids(ids)
    if len(ids) == 0:
        raise ValueError("need at least one identity id")
    nu = sample_nuisances(len(ids), generator, device, **nuisance_overrides)
    return render(identity_traits(ids, device), nu, size)


def identity_grid(ids, size: int = 64) -> torch.Tensor:
    """Each identity (rows) under 8 fixed poses and expressions (columns): images (N*8, 3, size, size)."""
    ids = as_ids(ids)
    K = 8
    over = dict(yaw=torch.tensor([0, -0.6, 0.6, 0, 0.3, -0.3, 0, 0.15]),
                pitch=torch.tensor([0, 0, 0, 0.25, -0.2, 0, 0, 0]),
                smile=torch.tensor([0.3, 0.2, 0.2, 0.9, 0, 1, 0.3, 0.5]),
                mouth_open=torch.tensor([0, 0, 0, 0, 0.8, 0, 0, 0.6]),
                blink=torch.tensor([0, 0, 0, 0, 0, 0, 1, 0]),
                brow_raise=torch.tensor([0, 0, 0, 0, 1, 0, 0, 0]))
    over = {k: v.repeat(len(ids)) for k, v in over.items()}
    g = torch.Generator().manual_seed(1)
    return render_faces(ids.repeat_interleave(K), size, g, **over)[0]


# ----------------------------------------------------------------------------------------------- speed
def benchmark(batch: int = 256, size: int = 64, repeats: int = 7, device=None) -> dict:
    """Frames per second of :func:`render` and :func:`make_clips` (clips of 16 frames): best and median run."""
    device = torch.device(device or "cpu")
    g = torch.Generator().manual_seed(0)
    ids = train_ids(batch)
    traits = identity_traits(ids, device)
    nu = sample_nuisances(batch, g, device)

    def best_seconds(fn):
        # The best of several runs: other processes on a shared machine only ever slow a run down.
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return min(times), sorted(times)[len(times) // 2]

    with torch.no_grad():
        best, median = best_seconds(lambda: render(traits, nu, size))
        render_fps, render_median = batch / best, batch / median
        n_clips = max(1, batch // 16)
        best, median = best_seconds(lambda: make_clips(ids[:n_clips], 16, size, 0, 1, generator=g, device=device))
        clip_fps, clip_median = n_clips * 16 / best, n_clips * 16 / median
        cpu_fps = _cpu_frames_per_second(traits, nu, size, repeats) if device.type == "cpu" else float("nan")
    return {"render_fps": render_fps, "clip_fps": clip_fps, "render_fps_median": render_median,
            "clip_fps_median": clip_median, "render_fps_per_core": cpu_fps, "batch": batch, "size": size,
            "threads": torch.get_num_threads(), "device": str(device)}


def _cpu_frames_per_second(traits: dict, nu: dict, size: int, repeats: int) -> float:
    """Frames per CPU-second of one thread rendering ``traits``/``nu``: the best of ``repeats`` runs.

    CPU time counts only the cycles this process got, so unlike wall-clock time it does not drop when other
    jobs share the cores. Batches are independent, so k cores running k workers (e.g. DataLoader workers)
    render about k times this rate.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        n = traits["face_width"].shape[0]
        render(traits, nu, size)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.process_time()
            render(traits, nu, size)
            best = min(best, time.process_time() - t0)
    finally:
        torch.set_num_threads(threads)
    return n / max(best, 1e-9)


# ----------------------------------------------------------------------------------------------- command line
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m labkit.synthfaces", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="print rendering frames per second")
    b.add_argument("--batch", type=int, default=256)
    b.add_argument("--size", type=int, default=64)
    b.add_argument("--device", default=None)
    gr = sub.add_parser("grid", help="save an identity grid (rows identities, columns poses) as PNG")
    gr.add_argument("out")
    gr.add_argument("--ids", type=int, default=8)
    gr.add_argument("--test", action="store_true", help="use held-out ids")
    args = parser.parse_args(argv)
    if args.cmd == "bench":
        r = benchmark(args.batch, args.size, device=args.device)
        print(f"synthfaces {r['size']}x{r['size']} on {r['device']} ({r['threads']} threads), batch {r['batch']}: "
              f"render {r['render_fps']:.0f} frames/s (median {r['render_fps_median']:.0f}), "
              f"make_clips {r['clip_fps']:.0f} frames/s (median {r['clip_fps_median']:.0f})")
        if r["render_fps_per_core"] == r["render_fps_per_core"]:  # not nan: measured on the CPU
            print(f"  CPU time, one thread: render {r['render_fps_per_core']:.0f} frames per CPU-second; "
                  f"2 cores with one worker each: about {2 * r['render_fps_per_core']:.0f} frames/s "
                  "(wall-clock figures above drop when other jobs share the cores)")
    else:
        ids = (test_ids if args.test else train_ids)(args.ids)
        images = identity_grid(ids)
        Image.fromarray(image_strip(images, ncols=images.shape[0] // len(ids))).save(args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
