"""The identity-preservation loss: keep every generated frame's face close to the references and to its neighbour.

With f the frozen face recognizer (unit-norm 512-d embeddings), for a video v_1..v_F and references
ref_1..ref_R::

    L = mean_t ||f(v_t) - mean_r f(ref_r)||^2  +  temporal_weight * mean_t ||f(v_t) - f(v_{t+1})||^2

The first term pulls each frame towards the identity of the references; the second penalises frame-to-frame
change of identity. For unit vectors ``||a - b||^2 = 2 - 2 cos(a, b)``, so each term is a cosine distance.
(The mean of R unit vectors is shorter than 1, so the reference term has a floor of ``1 - ||mean||^2`` even for
a perfect frame: the spread of the references.)

It is written without a loop over frames: all frames of all videos, and the references, go through the
encoder in ONE call. With ``face_masks`` each frame is first cropped to its face box (``roi_align``, so the
crop is differentiable and vectorised).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.func import functional_call
from torchvision.ops import roi_align

__all__ = ["identity_preservation_loss", "mask_boxes", "crop_faces", "embedding_terms"]


def mask_boxes(masks: torch.Tensor, margin: float = 0.15, threshold: float = 0.5) -> torch.Tensor:
    """Masks (N, H, W) -> square boxes (N, 4) as (x1, y1, x2, y2) in pixels around each face.

    The box is the mask's bounding box grown by ``margin`` on each side and made square. A frame with an
    empty mask gets the whole frame.
    """
    n, h, w = masks.shape
    on = masks > threshold
    rows, cols = on.any(dim=2), on.any(dim=1)
    ar_h = torch.arange(h, device=masks.device, dtype=torch.float32)
    ar_w = torch.arange(w, device=masks.device, dtype=torch.float32)
    big = float(max(h, w))
    y1 = torch.where(rows, ar_h, big).amin(dim=1)
    y2 = torch.where(rows, ar_h, -1.0).amax(dim=1) + 1
    x1 = torch.where(cols, ar_w, big).amin(dim=1)
    x2 = torch.where(cols, ar_w, -1.0).amax(dim=1) + 1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = torch.maximum(x2 - x1, y2 - y1) * (0.5 + margin)
    boxes = torch.stack([cx - half, cy - half, cx + half, cy + half], dim=1)
    empty = ~rows.any(dim=1)
    whole = torch.tensor([0.0, 0.0, float(w), float(h)], device=masks.device)
    return torch.where(empty[:, None], whole, boxes)


def crop_faces(images: torch.Tensor, masks: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """Images (N, 3, H, W) and masks (N, H, W) -> face crops (N, 3, size, size), differentiable.

    One ``roi_align`` call for all images; size defaults to H.
    """
    if masks.shape != (images.shape[0], *images.shape[-2:]):
        raise ValueError(f"face masks must be (N, H, W)={(images.shape[0], *images.shape[-2:])} for images of "
                         f"shape {tuple(images.shape)}, got {tuple(masks.shape)}")
    size = size or images.shape[-2]
    boxes = mask_boxes(masks).to(images.dtype)
    index = torch.arange(images.shape[0], device=images.device, dtype=images.dtype)[:, None]
    return roi_align(images, torch.cat([index, boxes], dim=1), output_size=(size, size), spatial_scale=1.0,
                     sampling_ratio=2, aligned=True)


def _frozen_call(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Run the encoder with detached parameters: gradients reach the images, never the encoder."""
    if not isinstance(encoder, nn.Module):
        return encoder(images)
    params = {name: p.detach() for name, p in encoder.named_parameters()}
    if not params:
        return encoder(images)
    return functional_call(encoder, params, (images,), strict=False)


def embedding_terms(frame_embeddings: torch.Tensor, reference_embeddings: torch.Tensor):
    """The two terms from embeddings: frames (B, F, D), references (B, R, D).

    Returns (reference per frame (B, F), temporal per step (B, F-1)): ||f_t - mean_r f_r||^2 and
    ||f_t - f_{t+1}||^2.
    """
    target = reference_embeddings.mean(dim=1, keepdim=True)
    reference = (frame_embeddings - target).square().sum(dim=-1)
    temporal = (frame_embeddings[:, 1:] - frame_embeddings[:, :-1]).square().sum(dim=-1)
    return reference, temporal


def identity_preservation_loss(generated_video, reference_faces, face_encoder, temporal_weight: float = 0.5,
                               face_masks=None, return_terms: bool = False, reference_masks=None):
    """Identity-preservation loss of generated videos against reference faces (a scalar, mean over videos).

    generated_video: (B, F, 3, H, W) or one video (F, 3, H, W), in [-1, 1]. reference_faces: (B, R, 3, h, w)
    or (R, 3, h, w); resized to (H, W) when the sizes differ. face_encoder: frozen nn.Module mapping
    (N, 3, H, W) -> (N, D) unit-norm; it never receives gradients, even if its parameters require them.
    face_masks: optional (B, F, H, W) (or (F, H, W)): each frame is cropped to its face box before
    encoding; reference_masks (B, R, h, w) likewise for the references.
    With ``return_terms`` returns (loss, dict(reference, temporal, reference_per_frame (B, F),
    temporal_per_step (B, F-1))). A one-frame video has a temporal term of 0.
    """
    video, refs = generated_video, reference_faces
    if video.dim() == 4:
        video = video.unsqueeze(0)
        face_masks = None if face_masks is None else face_masks.unsqueeze(0)
    if refs.dim() == 4:
        refs = refs.unsqueeze(0)
        reference_masks = None if reference_masks is None else reference_masks.unsqueeze(0)
    if video.dim() != 5 or video.shape[2] != 3 or video.shape[1] == 0:
        raise ValueError(f"generated_video must be (B, F>=1, 3, H, W) or (F, 3, H, W), got shape "
                         f"{tuple(generated_video.shape)}")
    if refs.dim() != 5 or refs.shape[2] != 3 or refs.shape[1] == 0:
        raise ValueError(f"reference_faces must be (B, R>=1, 3, h, w) or (R>=1, 3, h, w), got shape "
                         f"{tuple(reference_faces.shape)}")
    b, f, _, h, w = video.shape
    if refs.shape[0] != b:
        if refs.shape[0] != 1:
            raise ValueError(f"reference_faces batch {refs.shape[0]} does not match generated_video batch {b}: "
                             f"shapes {tuple(reference_faces.shape)} and {tuple(generated_video.shape)}")
        refs = refs.expand(b, *refs.shape[1:])
        reference_masks = None if reference_masks is None else reference_masks.expand(b, *reference_masks.shape[1:])
    r = refs.shape[1]
    frames = rearrange(video, "b f c h w -> (b f) c h w")
    ref_images = rearrange(refs, "b r c h w -> (b r) c h w")
    if face_masks is not None:
        if face_masks.shape != (b, f, h, w):
            raise ValueError(f"face_masks must be (B, F, H, W)={(b, f, h, w)}, got {tuple(face_masks.shape)}")
        frames = crop_faces(frames, rearrange(face_masks, "b f h w -> (b f) h w"))
    if reference_masks is not None:
        ref_images = crop_faces(ref_images, rearrange(reference_masks, "b r h w -> (b r) h w"))
    if ref_images.shape[-2:] != frames.shape[-2:]:
        ref_images = F.interpolate(ref_images, size=frames.shape[-2:], mode="bilinear", antialias=True)
    embeddings = _frozen_call(face_encoder, torch.cat([frames, ref_images.to(frames.dtype)]))
    frame_emb = rearrange(embeddings[: b * f], "(b f) d -> b f d", b=b)
    ref_emb = rearrange(embeddings[b * f:], "(b r) d -> b r d", r=r)
    reference_per_frame, temporal_per_step = embedding_terms(frame_emb, ref_emb)
    reference = reference_per_frame.mean()
    temporal = temporal_per_step.mean() if f > 1 else reference.new_zeros(())
    loss = reference + temporal_weight * temporal
    if not return_terms:
        return loss
    return loss, {"reference": reference, "temporal": temporal, "reference_per_frame": reference_per_frame,
                  "temporal_per_step": temporal_per_step}
