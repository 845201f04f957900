"""Identity cross-attention inside a real diffusers video UNet (``UNet3DConditionModel``).

``labkit.model.IdentityVideoDiT`` is the lab's own small model. This module shows that the same mechanism,
IP-Adapter's *decoupled cross-attention*, drops into a production video UNet through diffusers'
attention-processor API. In every spatial cross-attention layer the processor adds a second attention,
from the frame's pixels to the identity tokens, with its own key and value projections::

    out = Attention(q, k_text, v_text) + identity_strength * Attention(q, to_k_ip(tokens), to_v_ip(tokens))

Conditioning reaches processors through ``cross_attention_kwargs``. diffusers inspects each processor's
``__call__`` and drops (with a warning) every kwarg it does not name, so ``identity_tokens``,
``identity_strength`` and ``face_masks`` are named parameters here, also in the pass-through processor
that the other attention layers get.

    unet = UNet3DConditionModel(...)
    install_identity_processors(unet, identity_dim=512)
    unet(x, t, text, cross_attention_kwargs={"identity_tokens": tokens, "identity_strength": 0.8})
"""

from __future__ import annotations

import math

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

from labkit.token_ops import multihead_sdpa, pool_to_grid

__all__ = ["IdentityAttnProcessor", "IdentityPassThroughProcessor", "install_identity_processors"]


def _attention(attn: Attention, query, key, value, attention_mask=None):
    """Multi-head scaled dot-product attention with ``attn``'s head count; inputs and output (B, N, C)."""
    return multihead_sdpa(query, key, value, attn.heads, attention_mask).to(query.dtype)


def _masks_to_tokens(face_masks: torch.Tensor, batch: int, num_tokens: int) -> torch.Tensor:
    """Face masks (B, F, H, W) or (B*F, H, W) -> per-token weights (B*F, N, 1) at this layer's resolution."""
    masks = face_masks.reshape(-1, *face_masks.shape[-2:])
    if masks.shape[0] != batch:
        raise ValueError(f"face_masks give {masks.shape[0]} frames but the layer sees {batch} frames")
    h, w = masks.shape[-2:]
    th = round(math.sqrt(num_tokens * h / w))
    tw = num_tokens // th
    if th * tw != num_tokens:
        raise ValueError(f"cannot map a {h}x{w} mask onto {num_tokens} tokens")
    return pool_to_grid(masks, (th, tw))[..., None]


class IdentityPassThroughProcessor(AttnProcessor2_0):
    """diffusers' standard attention for the layers that take no identity.

    It only *names* ``identity_tokens``, ``identity_strength`` and ``face_masks`` so that diffusers does not
    warn that they are ignored when the same ``cross_attention_kwargs`` reach every layer.
    """

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 identity_tokens=None, identity_strength=None, face_masks=None):
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class IdentityAttnProcessor(nn.Module):
    """Decoupled identity cross-attention (IP-Adapter style) for one spatial cross-attention layer.

    Args:
        hidden_size: the layer's inner dimension (``attn.to_q.out_features``).
        identity_dim: width D of the identity tokens (B, L, D), e.g. 512 for raw recognizer embeddings
            or the IdentityEncoder's ``embed_dim``.

    ``__call__`` takes the usual processor arguments plus:
        identity_tokens: (B, L, D) or None. When the layer sees B*F frames, each video's tokens are repeated
            for its F frames.
        identity_strength: float or Tensor (B,), multiplies the identity branch; 0 gives exactly the
            original layer's output.
        face_masks: optional (B, F, H, W) in [0, 1]; limits the identity branch to face pixels.
    """

    def __init__(self, hidden_size: int, identity_dim: int):
        super().__init__()
        self.to_k_ip = nn.Linear(identity_dim, hidden_size, bias=False)
        self.to_v_ip = nn.Linear(identity_dim, hidden_size, bias=False)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 identity_tokens=None, identity_strength=1.0, face_masks=None):
        if hidden_states.ndim != 3:
            raise ValueError(f"expected hidden_states (B, N, C), got shape {tuple(hidden_states.shape)}")
        batch, num_tokens, _ = hidden_states.shape
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])

        query = attn.to_q(hidden_states)
        out = _attention(attn, query, attn.to_k(context), attn.to_v(context), attention_mask)

        strength_is_zero = not torch.is_tensor(identity_strength) and float(identity_strength) == 0.0
        if identity_tokens is not None and not strength_is_zero:
            out = out + self._identity_branch(attn, query, identity_tokens, identity_strength, face_masks)

        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor

    def _identity_branch(self, attn, query, identity_tokens, identity_strength, face_masks):
        """Attention from the frame's pixels to the identity tokens, weighted by strength and face mask."""
        batch, num_tokens, _ = query.shape
        if identity_tokens.ndim != 3:
            raise ValueError(f"identity_tokens must be (B, L, D), got shape {tuple(identity_tokens.shape)}")
        videos = identity_tokens.shape[0]
        if batch % videos != 0:
            raise ValueError(f"identity_tokens batch {videos} does not divide the layer's batch {batch}")
        frames = batch // videos
        tokens = identity_tokens.to(query.dtype).repeat_interleave(frames, dim=0)
        ip = _attention(attn, query, self.to_k_ip(tokens), self.to_v_ip(tokens))
        strength = torch.as_tensor(identity_strength, dtype=ip.dtype, device=ip.device)
        if strength.ndim == 1:
            strength = strength.repeat_interleave(frames)[:, None, None]
        ip = ip * strength
        if face_masks is not None:
            ip = ip * _masks_to_tokens(face_masks, batch, num_tokens).to(ip.dtype)
        return ip


def _is_spatial_cross_attention(name: str) -> bool:
    """UNet3D names: spatial transformers live under '.attentions.', temporal ones under 'temp_attentions'."""
    return ".attentions." in name and name.endswith("attn2")


def install_identity_processors(unet: nn.Module, identity_dim: int) -> nn.ModuleDict:
    """Give ``unet`` (a diffusers UNet3DConditionModel) identity cross-attention in one call.

    Every spatial cross-attention layer gets an :class:`IdentityAttnProcessor` with new, trainable
    ``to_k_ip``/``to_v_ip`` (randomly initialised: train them, the UNet can stay frozen, as in IP-Adapter).
    All other layers get the pass-through processor. Returns the new processors in a ModuleDict (their
    parameters are the ones to train).
    """
    processors, identity = {}, {}
    for name, module in unet.named_modules():
        if not isinstance(module, Attention):
            continue
        if _is_spatial_cross_attention(name):
            proc = IdentityAttnProcessor(module.to_q.out_features, identity_dim)
            proc.to(device=module.to_q.weight.device, dtype=module.to_q.weight.dtype)
            identity[name.replace(".", "_")] = proc
        else:
            proc = IdentityPassThroughProcessor()
        processors[f"{name}.processor"] = proc
    if not identity:
        raise ValueError("found no spatial cross-attention layer ('...attentions.N...attn2') in this model")
    unet.set_attn_processor(processors)
    return nn.ModuleDict(identity)
