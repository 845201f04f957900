"""Measuring identity over a video: similarity, normalised identity, stability, variety, bleed.

Every number is computed with the frozen face recognizer f (``labkit.faces.FaceRecognitionBackbone``, 512-d
unit-norm embeddings), and read against two measured levels (DESIGN.md):

* the **ceiling**: real rendered frames of the same identity, compared with its references;
* the **floor**: the same frames compared with other identities' references.

``normalised identity = (sim - floor) / (ceiling - floor)``: 1 means "as recognisable as a real frame",
0 means "no more like the reference than a stranger". Drift is this score against frame index.

The drift benchmark over the shipped checkpoint lives in :mod:`labkit.bench`; run it as
``python -m labkit.metrics bench --out outputs/bench`` (``--quick`` for a small version) and the speed
benchmark as ``python -m labkit.metrics speed``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "embed_frames", "reference_embedding", "reference_similarity", "normalised_identity", "identity_levels",
    "frame_stability", "subject_consistency", "share_above", "variety", "crop_regions", "scene_similarity",
    "bleed_and_swap", "summarise_video",
]


@torch.no_grad()
def embed_frames(recognizer, frames: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Recognizer embeddings of every frame: (B, F, 3, H, W) -> (B, F, 512), or (N, 3, H, W) -> (N, 512)."""
    if frames.ndim not in (4, 5) or frames.shape[-3] != 3:
        raise ValueError(f"frames must be (N, 3, H, W) or (B, F, 3, H, W), got shape {tuple(frames.shape)}")
    from labkit.faces import embed

    return embed(recognizer, frames, batch_size)


def reference_embedding(reference_embeddings: torch.Tensor) -> torch.Tensor:
    """Mean of R reference embeddings, re-normalised: (B, R, D) -> (B, D); (B, D) passes through normalised."""
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
    return torch.einsum("bfd,bd->bf", F.normalize(frame_embeddings, dim=-1), ref)


def normalised_identity(similarity, ceiling: float, floor: float):
    """(sim - floor) / (ceiling - floor): 1 = as good as real frames, 0 = a stranger. Works on floats and tensors."""
    if not ceiling > floor:
        raise ValueError(f"the ceiling ({ceiling}) must be above the floor ({floor})")
    return (similarity - floor) / (ceiling - floor)


@torch.no_grad()
def identity_levels(recognizer, ids: torch.Tensor, size: int = 32, num_frames: int = 16, num_refs: int = 3,
                    num_cuts: int = 3, seed: int = 0) -> dict:
    """Measure the ceiling and floor at the resolution the model generates (``size``).

    Renders real clips (with cuts) of ``ids`` (at least 2). Ceiling: mean cosine of each clip's frames to its
    own mean reference. Floor: the same frames against every *other* identity's mean reference.
    Returns dict(ceiling, floor, ceiling_std, floor_std, size, num_identities).
    """
    from labkit.synthfaces import make_clips

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


def frame_stability(frame_embeddings: torch.Tensor, cuts: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cosine between consecutive frames' embeddings, (B, F, D) -> (B,).

    With ``cuts`` (B, F) bool, transitions into a new shot are left out (a cut may change pose and light).
    """
    e = F.normalize(frame_embeddings, dim=-1)
    cos = (e[:, 1:] * e[:, :-1]).sum(-1)  # (B, F-1)
    keep = torch.ones_like(cos, dtype=torch.bool) if cuts is None else ~cuts[:, 1:].bool()
    return (cos * keep).sum(1) / keep.sum(1).clamp(min=1)


def subject_consistency(frame_embeddings: torch.Tensor) -> torch.Tensor:
    """VBench's subject consistency with the recognizer: mean over t >= 1 of (cos(e_t, e_0) + cos(e_t, e_t-1)) / 2.

    (B, F, D) -> (B,). VBench uses DINO features; here the face recognizer makes it about identity.
    """
    if frame_embeddings.shape[1] < 2:
        raise ValueError("subject consistency needs at least 2 frames")
    e = F.normalize(frame_embeddings, dim=-1)
    to_first = (e[:, 1:] * e[:, :1]).sum(-1)
    to_prev = (e[:, 1:] * e[:, :-1]).sum(-1)
    return ((to_first + to_prev) / 2).mean(1)


def share_above(similarity: torch.Tensor, threshold: float) -> torch.Tensor:
    """Share of frames whose similarity is above ``threshold``: (B, F) -> (B,) in [0, 1]."""
    return (similarity > threshold).float().mean(-1)


def variety(frames: torch.Tensor, cuts: torch.Tensor | None = None) -> torch.Tensor:
    """How much the picture still moves within a shot: mean |frame_t - frame_t-1| in pixels, (B, F, 3, H, W) -> (B,).

    Pose, expression and blinks all change pixels between frames; a model made rigid by too much identity
    strength repeats the same face and scores near 0. Transitions into a new shot (``cuts`` (B, F)) are left
    out, so a cut does not count as variety. Compare with the same figure on real clips.
    """
    if frames.ndim != 5:
        raise ValueError(f"frames must be (B, F, 3, H, W), got shape {tuple(frames.shape)}")
    diff = (frames[:, 1:] - frames[:, :-1]).abs().mean(dim=(2, 3, 4))  # (B, F-1)
    keep = torch.ones_like(diff, dtype=torch.bool) if cuts is None else ~cuts[:, 1:].bool()
    return (diff * keep).sum(1) / keep.sum(1).clamp(min=1)


def crop_regions(frames: torch.Tensor, masks: torch.Tensor, size: int = 32, pad: float = 0.15) -> torch.Tensor:
    """Crop each character's region: frames (N, 3, H, W), masks (N, C, H, W) -> crops (N, C, 3, size, size).

    The crop is the mask's bounding box grown by ``pad``; an empty mask gives the whole frame.
    """
    n, c = masks.shape[:2]
    h, w = frames.shape[-2:]
    crops = frames.new_zeros(n, c, 3, size, size)
    for i in range(n):
        for j in range(c):
            ys, xs = torch.nonzero(masks[i, j] > 0.5, as_tuple=True)
            if len(ys) == 0:
                y0, y1, x0, x1 = 0, h, 0, w
            else:
                y0, y1, x0, x1 = ys.min().item(), ys.max().item() + 1, xs.min().item(), xs.max().item() + 1
                py, px = int((y1 - y0) * pad), int((x1 - x0) * pad)
                y0, y1, x0, x1 = max(0, y0 - py), min(h, y1 + py), max(0, x0 - px), min(w, x1 + px)
            crop = frames[i, :, y0:y1, x0:x1][None]
            crops[i, j] = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)[0]
    return crops


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
    c = similarity.shape[-1]
    eye = torch.eye(c, dtype=torch.bool)
    own = similarity[..., eye].mean().item()
    bleed = similarity[..., ~eye].mean().item() if c > 1 else 0.0
    best = similarity.argmax(dim=-1)  # (B, F, C)
    swap = (best != torch.arange(c)).float().mean().item()
    return {"own": own, "bleed": bleed, "swap_rate": swap}


def summarise_video(similarity: torch.Tensor, frame_embeddings: torch.Tensor, frames: torch.Tensor,
                    levels: dict, cuts: torch.Tensor | None = None, threshold: float | None = None,
                    chunk_starts: list[int] | None = None) -> dict:
    """All single-character figures of a batch of videos as plain floats (for JSON).

    similarity (B, F) to the references, frame_embeddings (B, F, D), frames (B, F, 3, H, W), levels from
    :func:`identity_levels`. ``threshold`` defaults to halfway between floor and ceiling. ``chunk_starts``
    (frame index where each chunk's new frames start) adds the normalised score per chunk (drift).
    """
    norm = normalised_identity(similarity, levels["ceiling"], levels["floor"])
    threshold = threshold if threshold is not None else (levels["ceiling"] + levels["floor"]) / 2
    out = {
        "similarity": similarity.mean().item(),
        "normalised_identity": norm.mean().item(),
        "normalised_identity_std_over_videos": norm.mean(1).std().item() if len(norm) > 1 else 0.0,
        "stability": frame_stability(frame_embeddings, cuts).mean().item(),
        "subject_consistency": subject_consistency(frame_embeddings).mean().item(),
        "share_above_threshold": share_above(similarity, threshold).mean().item(),
        "threshold": threshold,
        "variety": variety(frames, cuts).mean().item(),
        "per_frame_normalised": norm.mean(0).tolist(),
    }
    if chunk_starts:
        bounds = list(chunk_starts) + [similarity.shape[1]]
        out["per_chunk_normalised"] = [norm[:, a:b].mean().item() for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    return out


def main(argv=None):
    """``python -m labkit.metrics bench|speed ...``: hands over to :mod:`labkit.bench`."""
    from labkit.bench import main as bench_main

    bench_main(argv)


if __name__ == "__main__":
    main()
