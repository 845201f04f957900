"""Frame-to-frame measures of a video: how stable the identity stays between consecutive frames (embeddings),
VBench's subject consistency, the share of frames above a score, and how much the picture still moves within
a shot (variety). Torch only; :mod:`labkit.metrics` re-exports them."""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

__all__ = ["frame_stability", "subject_consistency", "share_above", "variety"]


def frame_stability(frame_embeddings: torch.Tensor, cuts: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cosine between consecutive frames' embeddings, (B, F, D) -> (B,).

    With ``cuts`` (B, F) bool, transitions into a new shot are left out (a cut may change pose and light).
    """
    if frame_embeddings.ndim != 3 or (cuts is not None and tuple(cuts.shape) != tuple(frame_embeddings.shape[:2])):
        raise ValueError(f"frame_embeddings must be (B, F, D) and cuts (B, F), got shapes "
                         f"{tuple(frame_embeddings.shape)} and {None if cuts is None else tuple(cuts.shape)}")
    e = F.normalize(frame_embeddings, dim=-1)
    cos = (e[:, 1:] * e[:, :-1]).sum(-1)  # (B, F-1)
    keep = torch.ones_like(cos, dtype=torch.bool) if cuts is None else ~cuts[:, 1:].bool()
    return (cos * keep).sum(1) / keep.sum(1).clamp(min=1)


def subject_consistency(frame_embeddings: torch.Tensor) -> torch.Tensor:
    """VBench's subject consistency with the recognizer: mean over t >= 1 of
    (max(0, cos(e_t, e_0)) + max(0, cos(e_t, e_t-1))) / 2, (B, F, D) -> (B,).

    As VBench computes it (subject_consistency.py): both cosines are clipped at 0, so a frame that points
    away from the subject counts as 0, not as a negative. VBench uses DINO features; here the face
    recognizer makes it about identity.
    """
    if frame_embeddings.ndim != 3 or frame_embeddings.shape[1] < 2:
        raise ValueError(f"subject consistency needs embeddings (B, F, D) with F >= 2 frames, got shape "
                         f"{tuple(frame_embeddings.shape)}")
    e = F.normalize(frame_embeddings, dim=-1)
    to_first = (e[:, 1:] * e[:, :1]).sum(-1).clamp(min=0)
    to_prev = (e[:, 1:] * e[:, :-1]).sum(-1).clamp(min=0)
    return ((to_first + to_prev) / 2).mean(1)


def share_above(similarity: torch.Tensor, threshold: float) -> torch.Tensor:
    """Share of frames whose similarity reaches ``threshold`` (>=, as VBench-2.0 counts): (B, F) -> (B,)."""
    if not isinstance(threshold, (numbers.Real, torch.Tensor)) or torch.isnan(torch.as_tensor(threshold)).any():
        raise ValueError(f"threshold must be a number, got {threshold!r}")
    if torch.isnan(similarity).any():  # NaN would silently count as "below"
        raise ValueError(f"similarity (shape {tuple(similarity.shape)}) holds NaN values")
    return (similarity >= threshold).float().mean(-1)


def variety(frames: torch.Tensor, cuts: torch.Tensor | None = None) -> torch.Tensor:
    """How much the picture still moves within a shot: mean |frame_t - frame_t-1| in pixels, (B, F, 3, H, W) -> (B,).

    Pose, expression and blinks all change pixels between frames; a model made rigid by too much identity
    strength repeats the same face and scores near 0. Transitions into a new shot (``cuts`` (B, F)) are left
    out, so a cut does not count as variety. Compare with the same figure on real clips.
    """
    if frames.ndim != 5:
        raise ValueError(f"frames must be (B, F, 3, H, W), got shape {tuple(frames.shape)}")
    if cuts is not None and tuple(cuts.shape) != tuple(frames.shape[:2]):
        raise ValueError(f"cuts must be (B, F) = {tuple(frames.shape[:2])}, got shape {tuple(cuts.shape)}")
    diff = (frames[:, 1:] - frames[:, :-1]).abs().mean(dim=(2, 3, 4))  # (B, F-1)
    keep = torch.ones_like(diff, dtype=torch.bool) if cuts is None else ~cuts[:, 1:].bool()
    return (diff * keep).sum(1) / keep.sum(1).clamp(min=1)
