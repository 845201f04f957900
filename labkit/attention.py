"""Identity-aware attention: spatial, then temporal, then identity cross-attention, in one block.

One transformer block of the video model sees a clip as tokens ``x`` with layout ``b f n d``: batch,
frames, tokens per frame (an ``h x w`` grid flattened), channels. It runs three attentions, each pre-norm
and residual:

1. **spatial**: the tokens of one frame attend to each other, layout ``(b f) n d``;
2. **temporal**: each grid position attends to itself in every frame, layout ``(b n) f d``;
3. **identity**: every token attends to the identity tokens of :mod:`labkit.identity`, with its own key and
   value projections (``to_k_ip``/``to_v_ip``, as IP-Adapter's decoupled cross-attention). The update is
   multiplied by the face mask at token resolution and by ``identity_strength``, so tokens outside the face
   are left exactly as they were.

The block has no positional information of its own: the model adds frame and position embeddings before
its blocks, so the block itself is equivariant to permuting frames, which the tests check.

``python -m labkit.attention`` times forward+backward of this block against the same block written with
``nn.MultiheadAttention`` as in the article the course follows (:class:`MultiheadReferenceAttention`).
"""

from __future__ import annotations

import math
import numbers
import time

import torch
from einops import rearrange
from torch import nn

from labkit.token_ops import multihead_sdpa, pool_to_grid, split_heads

__all__ = [
    "IdentityAwareAttention", "MultiheadReferenceAttention", "SelfAttention", "IdentityCrossAttention",
    "masks_to_tokens", "temporal_and_masked_identity", "check_strength", "benchmark",
]


class SelfAttention(nn.Module):
    """Multi-head self-attention over (batch, seq, dim) with ``F.scaled_dot_product_attention``.

    ``to_qkv`` has the layout of ``nn.MultiheadAttention.in_proj_weight`` (q, k, v stacked), so weights copy
    across in both directions.
    """

    def __init__(self, dim: int, num_heads: int = 8):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        return self.to_out(multihead_sdpa(q, k, v, self.num_heads))


class IdentityCrossAttention(nn.Module):
    """Cross-attention from video tokens (B, Lq, dim) to identity tokens (B, L, identity_dim).

    ``to_k_ip``/``to_v_ip`` are separate from any text cross-attention, as in IP-Adapter. ``attn_mask``
    (B, Lq, L) bool routes queries to some identity tokens only; a query whose row is entirely False gets
    a zero output (never NaN). With ``record=True`` the head-averaged probabilities (B, Lq, L) are returned
    too, computed the explicit way for visualisation.
    """

    def __init__(self, dim: int, identity_dim: int, num_heads: int = 8):
        super().__init__()
        self.num_heads = num_heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k_ip = nn.Linear(identity_dim, dim, bias=False)
        self.to_v_ip = nn.Linear(identity_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x, identity_tokens, attn_mask=None, record: bool = False):
        q, k, v = self.to_q(x), self.to_k_ip(identity_tokens), self.to_v_ip(identity_tokens)
        empty_rows = None
        if attn_mask is not None:
            # An all-False row would make softmax divide 0 by 0. Let it attend everywhere, then zero it.
            empty_rows = ~attn_mask.any(dim=-1, keepdim=True)
            attn_mask = (attn_mask | empty_rows).unsqueeze(1)
        out = self.to_out(multihead_sdpa(q, k, v, self.num_heads, attn_mask))
        if empty_rows is not None:
            out = out.masked_fill(empty_rows, 0.0)  # after to_out, so its bias does not leak in either
        if not record:
            return out, None
        qh, kh = split_heads(q, self.num_heads), split_heads(k, self.num_heads)
        logits = qh @ kh.transpose(-1, -2) / math.sqrt(qh.shape[-1])
        if attn_mask is not None:
            logits = logits.masked_fill(~attn_mask, float("-inf"))
        probs = logits.softmax(dim=-1).mean(dim=1)
        if empty_rows is not None:
            probs = probs.masked_fill(empty_rows, 0.0)
        return out, probs


def masks_to_tokens(face_masks: torch.Tensor, num_frames: int, grid: tuple[int, int]) -> torch.Tensor:
    """Face masks at pixel (B, F, H, W) or token (B, F, N) resolution -> soft token masks (B, F, N).

    Pixel masks are area-averaged onto the ``grid`` (h, w) (:func:`labkit.token_ops.pool_to_grid`), so a
    token's value is the fraction of its patch covered by the face: binary masks get soft edges, soft masks
    stay soft.
    """
    h, w = grid
    if face_masks.dim() not in (3, 4) or face_masks.shape[1] != num_frames:
        raise ValueError(f"face_masks must be (B, F={num_frames}, H, W) or (B, F={num_frames}, N={h * w}), "
                         f"got shape {tuple(face_masks.shape)}")
    masks = face_masks.float()
    if masks.dim() == 3:
        if masks.shape[-1] != h * w:
            raise ValueError(f"token-resolution face_masks must have N={h * w} tokens for grid {grid}, "
                             f"got shape {tuple(face_masks.shape)}")
        return masks
    return pool_to_grid(masks, grid)


def check_strength(identity_strength, batch: int, device) -> torch.Tensor:
    """``identity_strength`` as a float or a tensor () or (B,) -> tensor (B, 1, 1, 1); rejects <0 and NaN."""
    if not torch.is_tensor(identity_strength) and not isinstance(identity_strength, numbers.Real):
        raise TypeError(f"identity_strength must be a float or a tensor (B,), got {type(identity_strength).__name__}")
    s = torch.as_tensor(identity_strength, dtype=torch.float32, device=device)
    if s.dim() > 1 or (s.dim() == 1 and s.shape[0] not in (1, batch)):
        raise ValueError(f"identity_strength must be a float or a tensor of shape (B,)=({batch},), "
                         f"got shape {tuple(s.shape)}")
    if not torch.isfinite(s).all() or (s < 0).any():
        raise ValueError(f"identity_strength must be finite and >= 0, got {s.tolist()}")
    return s.reshape(-1, 1, 1, 1).expand(batch, 1, 1, 1)


def temporal_and_masked_identity(x, temporal_attention, identity_attention, token_masks, identity_strength):
    """The middle and end of the block, written so that a learner can re-write it (exercise ``temporal``).

    x: (B, F, N, D) after spatial attention. ``temporal_attention`` maps (batch, F, D) -> (batch, F, D)
    (pre-norm inside, no residual). ``identity_attention`` maps (B, F, N, D) -> (B, F, N, D), the identity
    branch before gating. token_masks: (B, F, N) in [0, 1]; identity_strength: tensor (B, 1, 1, 1).
    Returns (B, F, N, D).
    """
    b = x.shape[0]
    h = rearrange(x, "b f n d -> (b n) f d")
    h = h + temporal_attention(h)
    x = rearrange(h, "(b n) f d -> b f n d", b=b)
    # Gate the OUTPUT, not the queries: a masked query still produces a non-zero update (softmax of zeros).
    return x + identity_strength * token_masks.unsqueeze(-1) * identity_attention(x)


class IdentityAwareAttention(nn.Module):
    """Spatial + temporal + identity attention on video tokens (B, F, N, dim), with SDPA.

    ``identity_dim`` is the width of the identity tokens (default ``dim``). After a forward pass with
    ``record_identity_attention = True``, ``last_identity_attention`` holds the head-averaged identity
    attention (B, F, N, L) and ``last_identity_update`` the gated identity update (B, F, N, dim).
    """

    def __init__(self, dim: int, num_heads: int = 8, identity_dim: int | None = None):
        super().__init__()
        self.dim, self.num_heads = dim, num_heads
        self.identity_dim = identity_dim or dim
        self.norm_spatial = nn.LayerNorm(dim)
        self.spatial_attn = SelfAttention(dim, num_heads)
        self.norm_temporal = nn.LayerNorm(dim)
        self.temporal_attn = SelfAttention(dim, num_heads)
        self.norm_identity = nn.LayerNorm(dim)
        self.identity_attn = IdentityCrossAttention(dim, self.identity_dim, num_heads)
        self.record_identity_attention = False
        self.last_identity_attention = None
        self.last_identity_update = None

    def _check(self, x, identity_tokens, grid):
        if x.dim() != 4 or x.shape[-1] != self.dim:
            raise ValueError(f"x must be (B, F, N, dim={self.dim}), got shape {tuple(x.shape)}")
        n = x.shape[2]
        if grid is None:
            side = math.isqrt(n)
            if side * side != n:
                raise ValueError(f"N={n} tokens per frame is not a square grid: pass grid=(h, w)")
            grid = (side, side)
        if grid[0] * grid[1] != n:
            raise ValueError(f"grid {tuple(grid)} has {grid[0] * grid[1]} tokens but x has N={n}")
        if identity_tokens is not None and (identity_tokens.dim() != 3 or identity_tokens.shape[0] != x.shape[0]
                                            or identity_tokens.shape[-1] != self.identity_dim):
            raise ValueError(f"identity_tokens must be (B={x.shape[0]}, L, identity_dim={self.identity_dim}), "
                             f"got shape {tuple(identity_tokens.shape)}")
        return tuple(grid)

    def forward(self, x, identity_tokens=None, face_masks=None, identity_strength=1.0, grid=None,
                identity_attention_mask=None):
        """x (B, F, N, dim) -> (B, F, N, dim).

        identity_tokens: (B, L, identity_dim) or None (then the identity branch is skipped).
        face_masks: (B, F, H, W) pixel or (B, F, N) token resolution, soft or binary; None means everywhere.
        identity_strength: float or tensor (B,), >= 0. grid: (h, w) of the N tokens (default square).
        identity_attention_mask: bool, broadcastable to (B, F, N, L), True where a query may attend to an
        identity token (region routing, see ``labkit.identity.region_routing_mask``).
        """
        grid = self._check(x, identity_tokens, grid)
        b, f, n, _ = x.shape
        strength = check_strength(identity_strength, b, x.device).to(x.dtype)
        token_masks = x.new_ones(b, f, n) if face_masks is None else masks_to_tokens(face_masks, f, grid)
        token_masks = token_masks.to(x.dtype)

        h = rearrange(x, "b f n d -> (b f) n d")
        h = h + self.spatial_attn(self.norm_spatial(h))
        x = rearrange(h, "(b f) n d -> b f n d", b=b)

        def temporal(h):
            return self.temporal_attn(self.norm_temporal(h))

        if identity_tokens is None:
            return temporal_and_masked_identity(x, temporal, lambda t: torch.zeros_like(t), token_masks, strength)

        mask = None
        if identity_attention_mask is not None:
            L = identity_tokens.shape[1]
            if identity_attention_mask.dim() != 4 or identity_attention_mask.shape[-1] != L:
                raise ValueError(f"identity_attention_mask must be bool broadcastable to (B, F, N, L)="
                                 f"({b}, {f}, {n}, {L}), got shape {tuple(identity_attention_mask.shape)}")
            mask = rearrange(identity_attention_mask.bool().expand(b, f, n, L), "b f n l -> b (f n) l")
        record = self.record_identity_attention

        def identity(h):
            q = rearrange(self.norm_identity(h), "b f n d -> b (f n) d")
            out, probs = self.identity_attn(q, identity_tokens, mask, record=record)
            out = rearrange(out, "b (f n) d -> b f n d", f=f)
            if record:
                self.last_identity_attention = rearrange(probs.detach(), "b (f n) l -> b f n l", f=f)
                self.last_identity_update = (strength * token_masks.unsqueeze(-1) * out).detach()
            return out

        return temporal_and_masked_identity(x, temporal, identity, token_masks, strength)


class MultiheadReferenceAttention(nn.Module):
    """The same block written with ``nn.MultiheadAttention``, as in the article: the readable reference.

    Used by the tests (weights copied from an :class:`IdentityAwareAttention` must give the same output to
    1e-5) and by the benchmark. It takes the same arguments, without routing masks.
    """

    def __init__(self, dim: int, num_heads: int = 8, identity_dim: int | None = None):
        super().__init__()
        identity_dim = identity_dim or dim
        self.norm_spatial, self.norm_temporal, self.norm_identity = (nn.LayerNorm(dim) for _ in range(3))
        self.spatial_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.temporal_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.identity_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True,
                                                   kdim=identity_dim, vdim=identity_dim)

    @classmethod
    def from_block(cls, block: IdentityAwareAttention) -> MultiheadReferenceAttention:
        """A reference with the weights of ``block`` copied across (q/k/v biases are zero in the block)."""
        ref = cls(block.dim, block.num_heads, block.identity_dim).to(block.norm_spatial.weight.device)
        with torch.no_grad():
            for name in ("norm_spatial", "norm_temporal", "norm_identity"):
                getattr(ref, name).load_state_dict(getattr(block, name).state_dict())
            for name in ("spatial_attn", "temporal_attn"):
                mine, theirs = getattr(block, name), getattr(ref, name)
                theirs.in_proj_weight.copy_(mine.to_qkv.weight)
                theirs.in_proj_bias.zero_()
                theirs.out_proj.load_state_dict(mine.to_out.state_dict())
            ia, ra = block.identity_attn, ref.identity_attn
            if ra.in_proj_weight is not None:  # kdim == dim: MultiheadAttention packs q, k, v together
                ra.in_proj_weight.copy_(torch.cat([ia.to_q.weight, ia.to_k_ip.weight, ia.to_v_ip.weight]))
            else:
                ra.q_proj_weight.copy_(ia.to_q.weight)
                ra.k_proj_weight.copy_(ia.to_k_ip.weight)
                ra.v_proj_weight.copy_(ia.to_v_ip.weight)
            ra.in_proj_bias.zero_()
            ra.out_proj.load_state_dict(ia.to_out.state_dict())
        return ref

    def forward(self, x, identity_tokens=None, face_masks=None, identity_strength=1.0, grid=None):
        b, f, n, d = x.shape
        grid = grid or (math.isqrt(n), math.isqrt(n))
        x = rearrange(x, "b f n d -> (b f) n d")
        h = self.norm_spatial(x)
        x = self.spatial_attn(h, h, h)[0] + x
        x = rearrange(x, "(b f) n d -> (b n) f d", b=b)
        h = self.norm_temporal(x)
        x = self.temporal_attn(h, h, h)[0] + x
        x = rearrange(x, "(b n) f d -> b (f n) d", b=b)
        if identity_tokens is None:
            return rearrange(x, "b (f n) d -> b f n d", f=f)
        masks = x.new_ones(b, f, n) if face_masks is None else masks_to_tokens(face_masks, f, grid)
        gate = rearrange(masks, "b f n -> b (f n) 1") * check_strength(identity_strength, b, x.device)[:, 0]
        h = self.norm_identity(x)
        x = gate * self.identity_attn(h, identity_tokens, identity_tokens)[0] + x
        return rearrange(x, "b (f n) d -> b f n d", f=f)


def benchmark(frames: int = 8, side: int = 16, dim: int = 256, num_heads: int = 8, num_identity_tokens: int = 32,
              batch: int = 1, repeats: int = 5, device: str = "cpu") -> dict:
    """Median forward+backward seconds of the SDPA block and the nn.MultiheadAttention reference.

    Same weights, same inputs (x (batch, frames, side*side, dim), identity tokens, binary face masks); the two
    are timed in alternation, ``repeats`` times each.
    """
    torch.manual_seed(0)
    block = IdentityAwareAttention(dim, num_heads).to(device)
    ref = MultiheadReferenceAttention.from_block(block)
    x = torch.randn(batch, frames, side * side, dim, device=device)
    tokens = torch.randn(batch, num_identity_tokens, dim, device=device)
    masks = (torch.rand(batch, frames, side * 4, side * 4, device=device) > 0.5).float()

    def time_one(module):
        xi = x.clone().requires_grad_(True)
        start = time.perf_counter()
        module(xi, tokens, masks, 0.8).square().mean().backward()
        if device != "cpu":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        module.zero_grad(set_to_none=True)
        return seconds

    # Interleaved, so that other work on a shared machine slows both versions alike; the first pair of runs
    # warms up allocators and kernels and is not counted.
    times = {"sdpa": [], "mha": []}
    for i in range(repeats + 1):
        for name, module in (("sdpa", block), ("mha", ref)):
            seconds = time_one(module)
            if i:
                times[name].append(seconds)
    sdpa, mha = (sorted(t)[len(t) // 2] for t in (times["sdpa"], times["mha"]))
    return {"sdpa_s": sdpa, "multihead_s": mha, "speedup": mha / sdpa}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Forward+backward time: SDPA block vs nn.MultiheadAttention")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--side", type=int, default=16, help="tokens per frame = side * side")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    r = benchmark(args.frames, args.side, args.dim, repeats=args.repeats)
    print(f"IdentityAwareAttention, {args.frames} frames of {args.side}x{args.side} tokens, dim {args.dim}, "
          f"forward+backward on {torch.get_num_threads()} CPU thread(s):")
    print(f"  SDPA block (F.scaled_dot_product_attention): {r['sdpa_s'] * 1000:8.1f} ms")
    print(f"  nn.MultiheadAttention reference:              {r['multihead_s'] * 1000:8.1f} ms")
    print(f"  ratio (reference / SDPA):                     {r['speedup']:8.2f}x")
