"""Measuring identity over a video: similarity, normalised identity, stability, variety, bleed.

Every number is computed with the frozen face recognizer f (``labkit.faces.FaceRecognitionBackbone``, 512-d
unit-norm embeddings), and read against two measured levels (DESIGN.md):

* the **ceiling**: real rendered frames of the same identity, compared with its references;
* the **floor**: the same frames compared with other identities' references.

``normalised identity = (sim - floor) / (ceiling - floor)``: 1 means "as recognisable as a real frame",
0 means "no more like the reference than a stranger". Drift is this score against frame index.

:func:`identity_scores` is the one public answer to "how much is each frame this person?": the normalised
identity times the recognizer's probability that the frame is a face at all, so a frame that is not a face
(colour blocks, mush, noise) scores like a stranger, as ConsisID scores a frame where no face is found.

The statistics every comparison is read with (standard errors, effect sizes, chunk means) are
:mod:`labkit.stats`, re-exported here. The drift and speed benchmarks are :mod:`labkit.bench`.
"""

from __future__ import annotations

import argparse
import numbers

import torch
import torch.nn.functional as F

from labkit.faces import MAX_PIXELS, NOT_A_FACE_BELOW, embed, embed_with_face_probability, load_recognizer
from labkit.stats import (
    MEANINGFUL_DIFFERENCE,
    chunk_means,
    describe_effect,
    effect_verdict,
    mean_and_se,
    paired_difference,
)
from labkit.synthfaces import make_clips, make_scenes, test_ids
from labkit.temporal_metrics import frame_stability, share_above, subject_consistency, variety

__all__ = [
    "identity_scores", "identification_top1", "measure_levels", "MIN_SCORE_SIZE", "summarise_scores",
    "paired_difference", "mean_and_se", "MEANINGFUL_DIFFERENCE", "effect_verdict", "describe_effect",
    "score_report", "scene_report", "colour_blocks", "embed_frames",
    "reference_embedding", "reference_similarity", "normalised_identity", "identity_levels", "frame_stability",
    "subject_consistency", "share_above", "variety", "crop_regions", "scene_similarity", "bleed_and_swap",
    "chunk_means",
]


@torch.no_grad()
def embed_frames(recognizer, frames: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Recognizer embeddings of every frame: (B, F, 3, H, W) -> (B, F, 512), or (N, 3, H, W) -> (N, 512)."""
    if frames.ndim not in (4, 5) or frames.shape[-3] != 3:
        raise ValueError(f"frames must be (N, 3, H, W) or (B, F, 3, H, W), got shape {tuple(frames.shape)}")
    return embed(recognizer, frames, batch_size)


def reference_embedding(reference_embeddings: torch.Tensor) -> torch.Tensor:
    """Mean of R reference embeddings, re-normalised: (B, R, D) -> (B, D); (B, D) passes through normalised."""
    if not torch.is_tensor(reference_embeddings):
        raise TypeError(f"reference embeddings must be a tensor (B, D) or (B, R, D), got "
                        f"{type(reference_embeddings).__name__}")
    if reference_embeddings.ndim == 3:
        reference_embeddings = reference_embeddings.mean(dim=1)
    if reference_embeddings.ndim != 2:
        raise ValueError(f"reference embeddings must be (B, D) or (B, R, D), got {tuple(reference_embeddings.shape)}")
    return F.normalize(reference_embeddings, dim=-1)


def reference_similarity(frame_embeddings: torch.Tensor, reference_embeddings: torch.Tensor) -> torch.Tensor:
    """Per-frame cosine to the mean reference embedding: frames (B, F, D), references (B, R, D) or (B, D) -> (B, F)."""
    if frame_embeddings.ndim != 3:
        raise ValueError(f"frame embeddings must be (B, F, D), got shape {tuple(frame_embeddings.shape)}")
    ref = reference_embedding(reference_embeddings)
    if ref.shape[0] != frame_embeddings.shape[0]:
        raise ValueError(f"{frame_embeddings.shape[0]} videos but {ref.shape[0]} reference sets")
    if ref.shape[-1] != frame_embeddings.shape[-1]:
        raise ValueError(f"frame embeddings {tuple(frame_embeddings.shape)} and reference embeddings "
                         f"{tuple(reference_embeddings.shape)} differ in width D")
    return torch.einsum("bfd,bd->bf", F.normalize(frame_embeddings, dim=-1), ref)


def normalised_identity(similarity, ceiling: float, floor: float):
    """(sim - floor) / (ceiling - floor): 1 = as good as real frames, 0 = a stranger. Works on floats and tensors."""
    if not all(isinstance(v, (numbers.Real, torch.Tensor)) and bool(torch.isfinite(torch.as_tensor(v)).all())
               for v in (ceiling, floor)):
        raise ValueError(f"the ceiling ({ceiling!r}) and floor ({floor!r}) must be finite numbers")
    if not ceiling > floor:
        raise ValueError(f"the ceiling ({ceiling}) must be above the floor ({floor})")
    return (similarity - floor) / (ceiling - floor)


#: Below this many pixels a synthfaces face no longer carries its identity (eyes and mouth are 1-2 pixels).
MIN_SCORE_SIZE = 32


@torch.no_grad()
def measure_levels(recognizer, size: int, num_identities: int = 32, num_frames: int = 16, seed: int = 0) -> dict:
    """The ceiling and floor cosines that :func:`identity_scores` normalises with, at frame size ``size``.

    Real clips with 3 cuts of held-out identities kept apart for calibration (``test_ids(offset=90_000)``,
    never used by the benchmarks), each against 3 references: ceiling = mean cosine of a clip's frames to its
    own mean reference; floor = the same frames against the other identities' references.
    """
    levels = identity_levels(recognizer, test_ids(num_identities, offset=90_000), size=size, num_frames=num_frames,
                             num_refs=3, num_cuts=3, seed=seed)
    return {"ceiling": levels["ceiling"], "floor": levels["floor"]}


def _levels_for(recognizer, size: int) -> dict:
    """Stored levels (written into the recognizer file when it was trained), else measured once and cached."""
    cache = getattr(recognizer, "score_levels", None)
    if cache is None:
        cache = recognizer.score_levels = {}
    if str(size) not in cache:
        cache[str(size)] = measure_levels(recognizer, size)
    return cache[str(size)]


def _check_images(name: str, x, min_size: int) -> None:
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch tensor (B, N, 3, H, W) in [-1, 1], got {type(x).__name__}")
    if x.ndim != 5 or x.shape[2] != 3:
        raise ValueError(f"{name} must be (B, N, 3, H, W) with 3 colour channels, got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)} (need at least one video and one image)")
    if min(x.shape[-2:]) < min_size:
        raise ValueError(f"{name} are {x.shape[-2]}x{x.shape[-1]} pixels (shape {tuple(x.shape)}); a synthfaces "
                         f"face needs at least {min_size}x{min_size} to carry its identity (the eyes and mouth "
                         "are one or two pixels below that): generate or render at 32 or 64")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be float in [-1, 1], got dtype {x.dtype} (shape {tuple(x.shape)})")
    if x.numel() > 3 * MAX_PIXELS:  # refused from the shape, before isfinite() allocates a mask as big
        raise ValueError(f"{name} of shape {tuple(x.shape)} holds more than {MAX_PIXELS:,} pixels: score fewer frames")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or inf values (shape {tuple(x.shape)})")
    lo, hi = x.min().item(), x.max().item()
    if lo < -1.001 or hi > 1.001:
        raise ValueError(f"{name} must lie in [-1, 1], got values in [{lo:.3f}, {hi:.3f}] (shape {tuple(x.shape)}); "
                         "images in [0, 1] become x * 2 - 1, uint8 images x / 127.5 - 1")


@torch.no_grad()
def identity_scores(frames: torch.Tensor, reference_images: torch.Tensor, recognizer=None,
                    return_parts: bool = False):
    """How much each frame is the person in the references: frames (B, F, 3, H, W) and reference_images
    (B, R, 3, h, w), both in [-1, 1], at least 32x32 -> scores (B, F).

    score = P(face) * (cos - floor) / (ceiling - floor), where cos compares the frame's embedding with the mean
    of the references' embeddings and the levels come from real frames at the frames' size
    (:func:`measure_levels`): about 1 for real frames of the same person (other pose, expression, lighting,
    after a cut), about 0 for a stranger, and about 0 for anything that is not a face. With
    ``return_parts=True`` also returns dict(cosine (B, F), face_probability (B, F), embeddings (B, F, 512),
    ceiling, floor), so a caller needs no second recognizer pass over the frames.
    """
    _check_images("frames", frames, MIN_SCORE_SIZE)
    _check_images("reference_images", reference_images, MIN_SCORE_SIZE)
    if frames.shape[0] != reference_images.shape[0]:
        raise ValueError(f"frames {tuple(frames.shape)} and reference_images {tuple(reference_images.shape)} must "
                         f"have the same batch size B (one reference set per video), got {frames.shape[0]} and "
                         f"{reference_images.shape[0]}")
    recognizer = recognizer if recognizer is not None else load_recognizer()
    ref_emb, ref_face = embed_with_face_probability(recognizer, reference_images)
    bad = (ref_face < NOT_A_FACE_BELOW).nonzero().tolist()
    if bad:
        b, r = bad[0]
        raise ValueError(f"reference image {r} of video {b} does not look like a face (face probability "
                         f"{ref_face[b, r]:.2f}; {len(bad)} such reference(s) in reference_images of shape "
                         f"{tuple(reference_images.shape)}): give clear pictures of the person")
    emb, face = embed_with_face_probability(recognizer, frames)
    cos = torch.einsum("bfd,bd->bf", emb, reference_embedding(ref_emb))
    levels = _levels_for(recognizer, int(frames.shape[-1]))
    scores = face * normalised_identity(cos, levels["ceiling"], levels["floor"])
    if return_parts:
        return scores, {"cosine": cos, "face_probability": face, "embeddings": emb, **levels}
    return scores


@torch.no_grad()
def identification_top1(frames: torch.Tensor, reference_images: torch.Tensor, recognizer=None) -> float:
    """Share of frames whose closest reference set (by cosine to its mean embedding), among the B videos'
    reference sets, is their own: frames (B, F, 3, H, W), reference_images (B, R, 3, h, w) -> float.
    Chance is 1/B."""
    _check_images("frames", frames, MIN_SCORE_SIZE)
    _check_images("reference_images", reference_images, MIN_SCORE_SIZE)
    recognizer = recognizer if recognizer is not None else load_recognizer()
    emb = embed_with_face_probability(recognizer, frames)[0]  # (B, F, D)
    refs = reference_embedding(embed_with_face_probability(recognizer, reference_images)[0])  # (B, D)
    best = torch.einsum("bfd,cd->bfc", emb, refs).argmax(-1)  # (B, F)
    return (best == torch.arange(len(frames))[:, None]).float().mean().item()


@torch.no_grad()
def identity_levels(recognizer, ids: torch.Tensor, size: int = 32, num_frames: int = 16, num_refs: int = 3,
                    num_cuts: int = 3, seed: int = 0) -> dict:
    """Measure the ceiling and floor at the resolution the model generates (``size``).

    Renders real clips (with cuts) of ``ids`` (at least 2). Ceiling: mean cosine of each clip's frames to its
    own mean reference. Floor: the same frames against every *other* identity's mean reference.
    Returns dict(ceiling, floor, ceiling_std, floor_std, size, num_identities).
    """
    ids = torch.as_tensor(ids).long()
    if ids.numel() < 2:
        raise ValueError("identity_levels needs at least 2 identities to measure a floor")
    gen = torch.Generator().manual_seed(seed)
    clips = make_clips(ids, num_frames=num_frames, size=size, num_refs=num_refs, num_cuts=num_cuts, generator=gen)
    frames = embed_frames(recognizer, clips.frames)  # (B, F, D)
    refs = reference_embedding(embed_frames(recognizer, clips.references))  # (B, D)
    sims = torch.einsum("bfd,cd->bcf", F.normalize(frames, dim=-1), refs)  # frames of b vs refs of c
    own = torch.eye(len(ids), dtype=torch.bool)
    ceiling, floor = sims[own], sims[~own]
    return {"ceiling": ceiling.mean().item(), "floor": floor.mean().item(), "ceiling_std": ceiling.std().item(),
            "floor_std": floor.std().item(), "size": size, "num_identities": len(ids)}


#: How a portrait frames its face, measured on 400 random renders: the picture's side is 1.91 times the
#: face mask's height, and the face's centre sits 0.469 of the side below the top (0.5 across).
PORTRAIT_SIDE_PER_FACE_HEIGHT = 1.91
PORTRAIT_FACE_CENTRE_Y = 0.469


def crop_regions(frames: torch.Tensor, masks: torch.Tensor, size: int = 32) -> torch.Tensor:
    """Each character's region framed like a portrait: frames (N, 3, H, W), masks (N, C, H, W)
    -> crops (N, C, 3, size, size).

    References are portraits, so a region must be cut the same way before the two are compared: a square
    of side :data:`PORTRAIT_SIDE_PER_FACE_HEIGHT` x the face mask's height, placed so the face sits where a
    portrait has it. Parts outside the frame repeat the border. An empty mask gives the whole frame.
    """
    if frames.ndim != 4 or masks.ndim != 4 or frames.shape[0] != masks.shape[0] or \
            frames.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"expected frames (N, 3, H, W) and masks (N, C, H, W) with the same N, H, W, got "
                         f"{tuple(frames.shape)} and {tuple(masks.shape)}")
    n, c, h, w = masks.shape
    inside = masks > 0.5
    rows, cols = inside.any(-1), inside.any(-2)  # (N, C, H), (N, C, W)
    ar_h, ar_w = torch.arange(h, device=masks.device), torch.arange(w, device=masks.device)
    top = torch.where(rows, ar_h, h).amin(-1).float()
    bottom = torch.where(rows, ar_h, -1).amax(-1).float() + 1
    left = torch.where(cols, ar_w, w).amin(-1).float()
    right = torch.where(cols, ar_w, -1).amax(-1).float() + 1
    empty = ~rows.any(-1)
    side = PORTRAIT_SIDE_PER_FACE_HEIGHT * (bottom - top)
    cy = (top + bottom) / 2 + (0.5 - PORTRAIT_FACE_CENTRE_Y) * side
    cx = (left + right) / 2
    side = torch.where(empty, torch.full_like(side, float(max(h, w))), side)
    cy, cx = torch.where(empty, torch.full_like(cy, h / 2), cy), torch.where(empty, torch.full_like(cx, w / 2), cx)
    # Affine map from the crop's [-1, 1] square to the frame's normalised coordinates.
    theta = torch.zeros(n * c, 2, 3, device=frames.device)
    theta[:, 0, 0] = (side / w).reshape(-1)
    theta[:, 1, 1] = (side / h).reshape(-1)
    theta[:, 0, 2] = (cx / w * 2 - 1).reshape(-1)
    theta[:, 1, 2] = (cy / h * 2 - 1).reshape(-1)
    src = frames.float().repeat_interleave(c, 0)
    big = int(max(size, side.max().item()))  # sample at the region's own resolution, then resize smoothly
    grid = F.affine_grid(theta, [n * c, 3, big, big], align_corners=False)
    crops = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if big != size:
        crops = F.interpolate(crops, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return crops.view(n, c, 3, size, size)


@torch.no_grad()
def scene_similarity(recognizer, frames: torch.Tensor, masks: torch.Tensor, reference_embeddings: torch.Tensor,
                     crop_size: int = 32) -> torch.Tensor:
    """Similarity of every character region to every character's references.

    frames (B, F, 3, H, W), masks (B, F, C, H, W), reference_embeddings (B, C, R, D) or (B, C, D)
    -> (B, F, C, C): [b, f, i, j] = cosine of region i in frame f to character j's mean reference.
    """
    b, f, c = masks.shape[:3]
    if frames.shape[:2] != (b, f):
        raise ValueError(f"frames {tuple(frames.shape)} and masks {tuple(masks.shape)} disagree on (B, F)")
    crops = crop_regions(frames.reshape(b * f, *frames.shape[2:]), masks.reshape(b * f, c, *masks.shape[-2:]),
                         size=crop_size)
    emb = F.normalize(embed_frames(recognizer, crops.reshape(-1, *crops.shape[2:])), dim=-1)
    emb = emb.reshape(b, f, c, -1)
    refs = reference_embeddings.mean(dim=2) if reference_embeddings.ndim == 4 else reference_embeddings
    refs = F.normalize(refs, dim=-1)  # (B, C, D)
    return torch.einsum("bfid,bjd->bfij", emb, refs)


def bleed_and_swap(similarity: torch.Tensor) -> dict:
    """From scene similarities (B, F, C, C): own-identity score, bleed, and swap rate.

    own: mean similarity of each region to its own character's references (diagonal).
    bleed: mean similarity of each region to the *other* characters' references (off-diagonal).
    swap_rate: share of (frame, region) whose best-matching reference is another character's.
    """
    if similarity.ndim < 2 or similarity.shape[-1] != similarity.shape[-2]:
        raise ValueError(f"similarity must be (B, F, C, C), got shape {tuple(similarity.shape)}")
    c = similarity.shape[-1]
    eye = torch.eye(c, dtype=torch.bool)
    own = similarity[..., eye].mean().item()
    bleed = similarity[..., ~eye].mean().item() if c > 1 else 0.0
    best = similarity.argmax(dim=-1)  # (B, F, C)
    swap = (best != torch.arange(c)).float().mean().item()
    return {"own": own, "bleed": bleed, "swap_rate": swap}


def summarise_scores(scores: torch.Tensor, face_probability: torch.Tensor, frame_embeddings: torch.Tensor,
                     frames: torch.Tensor, cuts: torch.Tensor | None = None, threshold: float = 0.5,
                     chunk_starts: list[int] | None = None) -> dict:
    """All single-character figures of a batch of videos as plain floats (for JSON).

    scores and face_probability (B, F) from :func:`identity_scores` (``return_parts``), frame_embeddings
    (B, F, D), frames (B, F, 3, H, W). ``identity_score`` comes with its standard error over the B videos
    (``identity_score_se``) and per video (``per_video``, for paired comparisons); ``share_above`` counts
    frames scoring >= ``threshold``; ``chunk_starts`` adds the score per chunk (drift).
    """
    if scores.ndim != 2 or face_probability.shape != scores.shape:
        raise ValueError(f"scores and face_probability must both be (B, F), got {tuple(scores.shape)} and "
                         f"{tuple(face_probability.shape)}")
    if frame_embeddings.shape[:2] != scores.shape or frames.shape[:2] != scores.shape or frames.ndim != 5:
        raise ValueError(f"frame_embeddings (B, F, D) and frames (B, F, 3, H, W) must match scores (B, F) = "
                         f"{tuple(scores.shape)}, got {tuple(frame_embeddings.shape)} and {tuple(frames.shape)}")
    mean, se = mean_and_se(scores.mean(1))
    out = {
        "identity_score": mean,
        "identity_score_se": se,
        "per_video": scores.mean(1).tolist(),
        "face_quality": face_probability.mean().item(),
        "stability": frame_stability(frame_embeddings, cuts).mean().item(),
        "subject_consistency": subject_consistency(frame_embeddings).mean().item()
        if frame_embeddings.shape[1] > 1 else float("nan"),
        "share_above": share_above(scores, threshold).mean().item(),
        "threshold": threshold,
        "variety": variety(frames, cuts).mean().item() if frames.shape[1] > 1 else 0.0,
        "per_frame": scores.mean(0).tolist(),
    }
    if chunk_starts:
        out["per_chunk"] = chunk_means(scores, chunk_starts).mean(0).tolist()
    return out


def colour_blocks(frames: torch.Tensor, grid: int = 8) -> torch.Tensor:
    """Each frame (..., 3, H, W) reduced to a grid x grid mosaic of its mean colours, at the same size: what a
    score that reads colour and layout cannot tell from the person."""
    lead, (h, w) = frames.shape[:-3], frames.shape[-2:]
    flat = frames.reshape(-1, *frames.shape[-3:])
    blocks = F.interpolate(F.adaptive_avg_pool2d(flat, grid), size=(h, w), mode="nearest")
    return blocks.reshape(*lead, 3, h, w)


@torch.no_grad()
def score_report(size: int = 32, num_identities: int = 32, num_frames: int = 16, seed: int = 0,
                 recognizer=None) -> dict:
    """What :func:`identity_scores` gives, on held-out identities, for things that should score high and low.

    Against each person's 3 references: their own real frames (clips with 3 cuts), another person's
    frames, a look-alike's (another face geometry with this person's colours, hair and accessories), the
    real frames as 8x8 colour blocks, a flat colour and pure noise. Returns the mean score of each.
    """
    g = torch.Generator().manual_seed(seed)
    ids = test_ids(num_identities, offset=3_000 + 1_000 * seed)
    others = test_ids(num_identities, offset=5_000 + 1_000 * seed)
    real = make_clips(ids, num_frames, size, num_refs=3, num_cuts=3, generator=g)
    look = make_clips(others, num_frames, size, num_refs=0, num_cuts=3, generator=g, look_from=ids)
    refs = real.references
    flat = refs.mean(dim=(1, 3, 4), keepdim=True)[:, :, :, :1, :1].expand(-1, num_frames, 3, size, size)
    candidates = {
        "same person": real.frames,
        "another person": real.frames.roll(1, 0),
        "look-alike": look.frames,
        "8x8 colour blocks": colour_blocks(real.frames),
        "flat colour": flat.contiguous(),
        "pure noise": torch.randn(real.frames.shape, generator=g).clamp(-1, 1),
    }
    return {name: identity_scores(frames, refs, recognizer).mean().item() for name, frames in candidates.items()}


@torch.no_grad()
def scene_report(recognizer=None, num_scenes: int = 24, num_frames: int = 4, seed: int = 0) -> dict:
    """Real scenes of 2, 3 and 4 characters scored per face region: own-character similarity, bleed and swap
    rate (:func:`bleed_and_swap`), next to the same characters alone in portrait clips ("single")."""
    recognizer = recognizer if recognizer is not None else load_recognizer()
    g = torch.Generator().manual_seed(seed)
    out = {}
    for c in (2, 3, 4):
        ids = test_ids(num_scenes * c, offset=7_000 + 100 * c).view(num_scenes, c)
        scenes = make_scenes(ids, num_frames=num_frames, size=32 * c, num_refs=3, generator=g)
        refs = embed_frames(recognizer, scenes.references.flatten(0, 1)).view(num_scenes, c, 3, -1)
        sim = scene_similarity(recognizer, scenes.frames, scenes.masks, refs)
        single = make_clips(ids.reshape(-1), num_frames, 32, num_refs=0, generator=g).frames
        single_sim = reference_similarity(embed_frames(recognizer, single), refs.flatten(0, 1))
        out[c] = {**bleed_and_swap(sim), "single": single_sim.mean().item()}
    return out


def main(argv=None):
    """``python -m labkit.metrics scores``: the identity score against things that should score low, and
    real multi-character scenes. (The drift and speed benchmarks are ``python -m labkit.bench``.)"""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("command", choices=["scores"])
    parser.parse_args(argv)
    recognizer = load_recognizer()
    print("identity_scores on held-out identities (mean over 32 people x 16 frames with 3 cuts, 3 references each)")
    print(f"{'':>20}" + "".join(f"{f'{s}x{s}':>10}" for s in (32, 64)))
    reports = {s: score_report(s, recognizer=recognizer) for s in (32, 64)}
    for name in reports[32]:
        print(f"{name:>20}" + "".join(f"{reports[s][name]:10.3f}" for s in (32, 64)))
    print("\nreal scenes, each face region framed like a portrait (24 scenes x 4 frames; 'single' = the same "
          "characters alone)")
    for c, r in scene_report(recognizer).items():
        print(f"  {c} characters: own {r['own']:.3f} (single {r['single']:.3f}), bleed {r['bleed']:.3f}, "
              f"swap rate {100 * r['swap_rate']:.1f}%")


if __name__ == "__main__":
    main()
