"""Two operations on tokens that every attention of the kit shares: multi-head SDPA and masks at token resolution.

* :func:`multihead_sdpa` splits the channels of (batch, length, channels) queries, keys and values into heads,
  runs ``F.scaled_dot_product_attention`` and merges the heads back (:func:`split_heads`, :func:`merge_heads`).
  The identity encoder's bank, the video block's spatial, temporal and identity attention and the diffusers
  processor all call it.
* :func:`pool_to_grid` area-averages pixel masks (..., H, W) onto a token grid (..., h*w): a token's value is
  the fraction of its patch that the mask covers, so binary masks get soft edges and soft masks stay soft.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

__all__ = ["split_heads", "merge_heads", "multihead_sdpa", "pool_to_grid"]


def split_heads(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, L, heads * C) -> (B, heads, L, C)."""
    return rearrange(t, "b l (h c) -> b h l c", h=num_heads)


def merge_heads(t: torch.Tensor) -> torch.Tensor:
    """(B, heads, L, C) -> (B, L, heads * C)."""
    return rearrange(t, "b h l c -> b l (h c)")


def multihead_sdpa(q, k, v, num_heads: int, attn_mask=None) -> torch.Tensor:
    """Multi-head scaled dot-product attention: q (B, Lq, D), k and v (B, Lk, D) -> (B, Lq, D).

    ``attn_mask``: bool (B, 1 or heads, Lq, Lk), True = may attend, or an additive float mask, as
    ``F.scaled_dot_product_attention`` takes it.
    """
    out = F.scaled_dot_product_attention(split_heads(q, num_heads), split_heads(k, num_heads),
                                         split_heads(v, num_heads), attn_mask=attn_mask)
    return merge_heads(out)


def pool_to_grid(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Pixel masks (..., H, W) -> token masks (..., h * w) on the token ``grid`` (h, w), area-averaged, float."""
    h, w = grid
    lead = masks.shape[:-2]
    planes = masks.float().reshape(math.prod(lead), 1, *masks.shape[-2:])
    if planes.shape[-2:] != (h, w):
        planes = F.adaptive_avg_pool2d(planes, (h, w))
    return planes.reshape(*lead, h * w)
