"""Statistics the course reads every comparison with: means with standard errors, paired differences, effect
sizes against the smallest difference that matters, and the mean score of each chunk of a video."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["mean_and_se", "MEANINGFUL_DIFFERENCE", "effect_verdict", "describe_effect", "paired_difference",
           "chunk_means"]


def mean_and_se(per_video: torch.Tensor) -> tuple[float, float]:
    """Mean over videos and its standard error (std / sqrt(n)); per_video (B,). One video has se 0."""
    n = per_video.numel()
    return per_video.mean().item(), (per_video.std().item() / n**0.5) if n > 1 else 0.0


#: The smallest difference in normalised identity score (1 = as recognisable as a real frame of the person, 0 = a
#: stranger) that the course treats as mattering. Every comparison the notebooks print is read against it: a
#: difference can be statistically clear (many videos, a small standard error) and still too small to matter.
MEANINGFUL_DIFFERENCE = 0.05


def effect_verdict(difference: float, se: float, smallest: float = MEANINGFUL_DIFFERENCE, z: float = 2.0) -> str:
    """What an effect (a - b, with its standard error) says, read from its size, not from its significance.

    The interval is ``difference +- z * se`` (z = 2: about 95%). Four answers:
    ``"higher, by more than <smallest>"`` / ``"lower, ..."`` when the whole interval is beyond the smallest
    difference that matters; ``"no difference that matters"`` when the whole interval lies within
    +-smallest (however clearly it differs from 0); ``"unclear"`` otherwise (more videos would tell).
    """
    low, high = difference - z * se, difference + z * se
    if low >= smallest:
        return f"higher, by more than {smallest:.3g}"
    if high <= -smallest:
        return f"lower, by more than {smallest:.3g}"
    if -smallest < low and high < smallest:
        return f"no difference that matters (within +-{smallest:.3g})"
    return f"unclear: the interval reaches past +-{smallest:.3g} but also inside it"


def describe_effect(label: str, difference: float, se: float, smallest: float = MEANINGFUL_DIFFERENCE,
                    z: float = 2.0) -> str:
    """One line: the effect size with its uncertainty, the smallest difference that matters, the verdict."""
    verdict = effect_verdict(difference, se, smallest, z)
    return (f"{label}: {difference:+.3f} +- {se:.3f} (interval {difference - z * se:+.3f} to "
            f"{difference + z * se:+.3f}; matters beyond +-{smallest:.3g}) -> {verdict}")


def paired_difference(a: dict, b: dict) -> tuple[float, float]:
    """Effect of setting a over setting b on the same videos: mean of the per-video differences of
    ``identity_score`` and its standard error, from two :func:`summarise_scores` results."""
    return mean_and_se(torch.tensor(a["per_video"]) - torch.tensor(b["per_video"]))


def chunk_means(scores, chunk_starts):
    """Mean score of each chunk: scores (B, F) (numpy or torch), chunk_starts (first frame of each chunk,
    increasing, starting at 0) -> (B, num_chunks) of the same kind. Empty chunks are left out."""
    bounds = list(chunk_starts) + [scores.shape[1]]
    means = [scores[:, a:b].mean(1) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    if isinstance(scores, np.ndarray):
        return np.stack(means, 1)
    return torch.stack(means, 1)
