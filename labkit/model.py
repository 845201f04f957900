"""IdentityVideoDiT: a small spatio-temporal diffusion transformer with identity conditioning.

The model predicts the diffusion target (v by default) for a short clip of noisy frames. It is a diffusers
``ModelMixin`` + ``ConfigMixin``, so ``save_pretrained``/``from_pretrained`` write and read safetensors and
diffusers' schedulers drive it (``labkit.pipeline``). Sizes are chosen for a CPU: 32x32 frames cut into
4x4 pixel patches give 64 tokens per frame, and a chunk holds up to 8 frames.

Three conditions, each optional, so that one checkpoint serves every strategy of the course:

* **identity tokens** from :class:`labkit.identity.IdentityEncoder` (reference faces -> recognizer ->
  face-only tokens by default: one linear map and LayerNorm, IP-Adapter-FaceID style; the learned-bank
  resampler collapses to a face-independent bias in a model this small), read by identity cross-attention
  in every block, scaled by
  ``identity_strength`` and, when face masks are given, limited to the face. They arrive the diffusers way,
  ``cross_attention_kwargs={"identity_tokens": ..., "identity_strength": ...}``;
* **clean context frames** given per frame with a flag (B, F): frame 0 given = image-to-video from a
  keyframe; the first k frames given = continuation of the previous chunk;
* **face masks** (B, F, H, W), the layout of the face in each frame.

Training drops each condition at random (``labkit.train``), so the model also knows the unconditional case
and identity guidance (conditional minus unconditional prediction) is possible.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from einops import rearrange
from safetensors import safe_open
from torch import nn

from labkit.attention import IdentityAwareAttention
from labkit.common import data_path
from labkit.identity import EMBEDDING_DIM, IdentityEncoder
from labkit.token_ops import pool_to_grid

__all__ = ["IdentityVideoDiT", "IdentityVideoDiTOutput", "load_model"]

ALLOWED_CROSS_ATTENTION_KWARGS = {"identity_tokens", "identity_strength", "identity_attention_mask"}


@dataclass
class IdentityVideoDiTOutput(BaseOutput):
    """sample: the model's prediction (B, F, 3, H, W)."""

    sample: torch.Tensor


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of diffusion timesteps t (B,) -> (B, dim), as in DDPM and DiT."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_2d(grid: tuple[int, int], dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding of an (h, w) token grid -> (h*w, dim), as in MAE and DiT."""
    h, w = grid
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    quarter = dim // 4
    freqs = 1.0 / (10_000 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    parts = []
    for coord in (ys.flatten(), xs.flatten()):
        args = coord[:, None] * freqs[None]
        parts += [torch.sin(args), torch.cos(args)]
    emb = torch.cat(parts, dim=1)
    return F.pad(emb, (0, dim - emb.shape[1]))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, F, N, D) shifted and scaled per frame by (B, F, D)."""
    return x * (1 + scale[:, :, None]) + shift[:, :, None]


class DiTBlock(nn.Module):
    """IdentityAwareAttention (spatial, temporal, identity) then an MLP, both modulated by adaLN-Zero.

    The conditioning vector c (B, F, D) holds the timestep and per-frame flags; its gates start at zero,
    so a fresh block is the identity function and deep stacks train stably.
    """

    def __init__(self, dim: int, num_heads: int, identity_dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = IdentityAwareAttention(dim, num_heads=num_heads, identity_dim=identity_dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x, c, identity_tokens, face_masks, identity_strength, grid, identity_attention_mask):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=-1)
        h = modulate(self.norm1(x), shift1, scale1)
        # IdentityAwareAttention returns its input plus three residual branches; gate only the branches.
        delta = self.attn(h, identity_tokens, face_masks=face_masks, identity_strength=identity_strength,
                          grid=grid, identity_attention_mask=identity_attention_mask) - h
        x = x + gate1[:, :, None] * delta
        return x + gate2[:, :, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class IdentityVideoDiT(ModelMixin, ConfigMixin):
    """Diffusion transformer over pixel patches of short clips, conditioned on identity, context and masks.

    Args (all stored in ``config.json``):
        sample_size: frame side in pixels (32). patch_size: patch side (4) -> (32/4)^2 = 64 tokens per frame.
        max_frames: most frames one call handles (8); longer videos are generated in chunks.
        dim, depth, num_heads, mlp_ratio: transformer width, blocks, heads, MLP expansion.
        identity_dim, num_identity_tokens, face_embed_dim: the IdentityEncoder inside the model turns
            recognizer embeddings of face_embed_dim (:data:`labkit.identity.EMBEDDING_DIM`, 512) into
            num_identity_tokens tokens of identity_dim.
        identity_token_design: "face_only" (default) or "resampler" (:data:`labkit.identity.TOKEN_DESIGNS`).
        prediction_type: what the network predicts, "v_prediction" or "epsilon" (must match the scheduler).
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(self, sample_size: int = 32, patch_size: int = 4, in_channels: int = 3, max_frames: int = 8,
                 dim: int = 128, depth: int = 4, num_heads: int = 4, mlp_ratio: float = 4.0,
                 identity_dim: int = 128, num_identity_tokens: int = 8, face_embed_dim: int = EMBEDDING_DIM,
                 prediction_type: str = "v_prediction", identity_token_design: str = "face_only"):
        super().__init__()
        if sample_size % patch_size:
            raise ValueError(f"sample_size {sample_size} must be a multiple of patch_size {patch_size}")
        self.grid = (sample_size // patch_size, sample_size // patch_size)
        # Per pixel: the noisy frame (3), the clean context frame or zeros (3) and the "given" flag (1).
        self.patch_embed = nn.Linear((2 * in_channels + 1) * patch_size ** 2, dim)
        # Fixed 2-D sine-cosine positions (as DiT): a patch knows where it is from the first step, which
        # matters when a CPU run is only a few thousand steps long. Frames get a learned embedding.
        self.register_buffer("pos_embed", sincos_2d(self.grid, dim)[None, None], persistent=False)
        self.frame_embed = nn.Parameter(torch.randn(1, max_frames, 1, dim) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.given_embed = nn.Embedding(2, dim)  # frame is a clean context frame or not
        self.cut_embed = nn.Embedding(2, dim)  # a new shot starts at this frame or not
        self.identity_encoder = IdentityEncoder(embed_dim=identity_dim, num_tokens=num_identity_tokens,
                                                backbone=None, num_heads=max(1, identity_dim // 32),
                                                design=identity_token_design, face_dim=face_embed_dim)
        self.blocks = nn.ModuleList(DiTBlock(dim, num_heads, identity_dim, mlp_ratio) for _ in range(depth))
        self.final_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.out = nn.Linear(dim, in_channels * patch_size ** 2)
        nn.init.zeros_(self.final_ada[1].weight)
        nn.init.zeros_(self.final_ada[1].bias)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def encode_identity(self, face_embeddings: torch.Tensor) -> torch.Tensor:
        """Recognizer embeddings (B, face_embed_dim) or (B, R, face_embed_dim) (R references, averaged) -> tokens
        (B, T, identity_dim)."""
        return self.identity_encoder.encode_embeddings(face_embeddings)

    def _check_inputs(self, sample, context_frames, context_mask, face_masks, cuts):
        cfg = self.config
        expected = (3, cfg.sample_size, cfg.sample_size)
        if not torch.is_tensor(sample) or not sample.is_floating_point():
            raise TypeError(f"sample must be a float tensor (B, F, {expected[0]}, {expected[1]}, {expected[2]}), got "
                            f"{type(sample).__name__} {getattr(sample, 'dtype', '')}")
        if sample.ndim != 5 or tuple(sample.shape[2:]) != expected or 0 in sample.shape[:2]:
            raise ValueError(f"sample must be (B, F, {expected[0]}, {expected[1]}, {expected[2]}) with B, F >= 1, "
                             f"got shape {tuple(sample.shape)}")
        b, f = sample.shape[:2]
        if f > cfg.max_frames:
            raise ValueError(f"this model handles at most {cfg.max_frames} frames per call, got sample with {f}; "
                             "generate longer videos in chunks (ReferenceConditionedGenerator does this)")
        if context_frames is not None and context_frames.shape != sample.shape:
            raise ValueError(f"context_frames must match sample {tuple(sample.shape)}, got "
                             f"{tuple(context_frames.shape)}")
        for name, value in (("context_mask", context_mask), ("cuts", cuts)):
            if value is not None and tuple(value.shape) != (b, f):
                raise ValueError(f"{name} must be (B, F) = {(b, f)}, got {tuple(value.shape)}")
        if face_masks is not None and tuple(face_masks.shape) != (b, f, cfg.sample_size, cfg.sample_size):
            raise ValueError(f"face_masks must be (B, F, H, W) = {(b, f, cfg.sample_size, cfg.sample_size)}, "
                             f"got {tuple(face_masks.shape)}")

    def forward(self, sample: torch.Tensor, timestep, context_frames: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None, face_masks: torch.Tensor | None = None,
                cuts: torch.Tensor | None = None, cross_attention_kwargs: dict | None = None,
                return_dict: bool = True):
        """Predict the diffusion target for noisy frames.

        Args:
            sample: noisy frames (B, F, 3, H, W), F <= max_frames.
            timestep: int, or Tensor () or (B,).
            context_frames: clean frames (B, F, 3, H, W); only frames flagged in ``context_mask`` are read.
            context_mask: (B, F) bool, True where a clean context frame is given.
            face_masks: (B, F, H, W) in [0, 1]: where identity attention may act. None = everywhere.
            cuts: (B, F) bool, True where a new shot starts.
            cross_attention_kwargs: {"identity_tokens": (B, T, identity_dim) or None,
                "identity_strength": float or (B,), "identity_attention_mask": optional routing mask}.
        Returns:
            IdentityVideoDiTOutput(sample=(B, F, 3, H, W)), or a tuple when return_dict is False.
        """
        kwargs = dict(cross_attention_kwargs or {})
        unknown = set(kwargs) - ALLOWED_CROSS_ATTENTION_KWARGS
        if unknown:
            raise ValueError(f"unknown cross_attention_kwargs {sorted(unknown)}; expected a subset of "
                             f"{sorted(ALLOWED_CROSS_ATTENTION_KWARGS)}")
        self._check_inputs(sample, context_frames, context_mask, face_masks, cuts)
        b, f = sample.shape[:2]
        if not torch.is_tensor(timestep) and not isinstance(timestep, numbers.Real):
            raise TypeError(f"timestep must be a number or a tensor () or (B,), got {type(timestep).__name__}")
        steps = torch.as_tensor(timestep)
        if steps.ndim > 1 or steps.numel() not in (1, b) or (not torch.compiler.is_compiling() and (
                not torch.isfinite(steps.float()).all() or (steps < 0).any())):
            raise ValueError(f"timestep must be >= 0 and finite, a number or a tensor () or (B={b},), got "
                             f"{timestep if steps.numel() <= 8 else tuple(steps.shape)}")
        p = self.config.patch_size
        device = sample.device
        if context_mask is None or context_frames is None:
            context_mask = torch.zeros(b, f, dtype=torch.bool, device=device)
            context_frames = torch.zeros_like(sample)
        given = context_mask.to(sample.dtype)
        context = context_frames * given[:, :, None, None, None]
        flag = given[:, :, None, None, None].expand(b, f, 1, *sample.shape[-2:])
        pixels = torch.cat([sample, context, flag], dim=2)
        x = rearrange(pixels, "b f c (h p1) (w p2) -> b f (h w) (p1 p2 c)", p1=p, p2=p)
        x = self.patch_embed(x) + self.pos_embed + self.frame_embed[:, :f]

        t = torch.as_tensor(timestep, device=device).reshape(-1).expand(b)
        c = self.time_mlp(timestep_embedding(t, self.config.dim))[:, None]
        cut_ids = torch.zeros(b, f, dtype=torch.long, device=device) if cuts is None else cuts.long()
        c = c + self.given_embed(context_mask.long()) + self.cut_embed(cut_ids)  # (B, F, D)

        tokens = kwargs.get("identity_tokens")
        strength = kwargs.get("identity_strength", 1.0)
        routing = kwargs.get("identity_attention_mask")
        token_masks = None if face_masks is None else pool_to_grid(face_masks, self.grid)  # (B, F, N)
        for block in self.blocks:
            x = block(x, c, tokens, token_masks, strength, self.grid, routing)

        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        x = self.out(modulate(self.final_norm(x), shift, scale))
        out = rearrange(x, "b f (h w) (p1 p2 c) -> b f c (h p1) (w p2)", h=self.grid[0], p1=p, p2=p)
        if not return_dict:
            return (out,)
        return IdentityVideoDiTOutput(sample=out)


#: A parameter that only each token design has, to tell a checkpoint's design from its weights.
_DESIGN_KEYS = {"face_only": "identity_encoder.to_tokens.weight", "resampler": "identity_encoder.identity_bank"}


def _check_token_design(path) -> None:
    """Refuse a checkpoint whose weights were trained with another identity-token design than its config says
    (diffusers would otherwise fill the missing layers with random numbers and only warn)."""
    config = json.loads((path / "config.json").read_text())
    design = config.get("identity_token_design", "face_only")
    weights = path / "diffusion_pytorch_model.safetensors"
    if design not in _DESIGN_KEYS or not weights.is_file():
        return  # an unknown design or missing weights: from_pretrained reports it
    try:
        with safe_open(str(weights), "pt") as f:
            keys = set(f.keys())
    except Exception:  # noqa: BLE001 - a corrupt file is reported by from_pretrained below
        return
    if _DESIGN_KEYS[design] not in keys:
        found = [d for d, k in _DESIGN_KEYS.items() if k in keys]
        raise ValueError(f"the checkpoint at {path} has identity_token_design={design!r} in config.json, but its "
                         f"weights were trained with {found[0] if found else 'another'!r} tokens; fix config.json "
                         "or use the matching checkpoint")


def load_model(path=None, device=None, dtype=torch.float32) -> IdentityVideoDiT:
    """Load an IdentityVideoDiT folder (default: the checkpoint shipped in data/) with a clear error.

    A missing, truncated or corrupt checkpoint raises ValueError naming the folder and what went wrong,
    instead of a deep safetensors traceback.
    """
    path = Path(path) if path is not None else data_path("identity_video_dit")
    if not (path / "config.json").is_file():
        raise ValueError(f"no IdentityVideoDiT checkpoint at {path}: expected config.json and "
                         "diffusion_pytorch_model.safetensors (save one with model.save_pretrained(path))")
    _check_token_design(path)
    try:
        model = IdentityVideoDiT.from_pretrained(path, torch_dtype=dtype, low_cpu_mem_usage=False)
    except Exception as err:  # noqa: BLE001 - re-raised with the folder named
        raise ValueError(f"could not load the IdentityVideoDiT checkpoint at {path}: it is missing or corrupt "
                         f"({type(err).__name__}: {str(err)[:200]})") from err
    return model.to(device or "cpu").eval()
