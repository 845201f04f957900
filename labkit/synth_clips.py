"""Clips and scenes of synthetic faces: smooth motion within a shot, cuts between shots, references.

Layouts: clips (B, F, 3, H, W) in [-1, 1], masks (B, F, H, W); scenes put 2..4 characters side by side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from labkit.synth_drawing import background, camera_theta, character_layers, check_size, place, render
from labkit.synth_traits import as_ids, identity_traits, mix32, sample_nuisances, to_device


@dataclass
class Clip:
    """One clip of one identity: frames (F,3,H,W), masks (F,H,W), references (R,3,H,W), cut frame indices."""

    frames: torch.Tensor
    masks: torch.Tensor
    references: torch.Tensor
    cuts: list
    identity: int


@dataclass
class ClipBatch:
    """Clips of B identities: frames (B,F,3,H,W), masks (B,F,H,W), references (B,R,3,H,W), cuts (B,F) bool
    (True where a new shot starts; frame 0 is never a cut) and ids (B,)."""

    frames: torch.Tensor
    masks: torch.Tensor
    references: torch.Tensor
    cuts: torch.Tensor
    ids: torch.Tensor


@dataclass
class SceneBatch:
    """Scenes with C characters side by side: frames (B,F,3,H,W), masks (B,F,C,H,W) one per character,
    references (B,C,R,3,H,W), cuts (B,F) bool, ids (B,C)."""

    frames: torch.Tensor
    masks: torch.Tensor
    references: torch.Tensor
    cuts: torch.Tensor
    ids: torch.Tensor


# What a cut changes: camera, background, lighting, and the clothes (a new shot may be another day).
_SHOT_KEYS = ("light_angle", "light_strength", "brightness", "bg_color", "bg_color2", "bg_angle", "bg_shapes",
              "bg_shape_color", "shirt_color", "zoom", "shift_x", "shift_y")
# In a scene, background and light are the scene's; each character keeps its own camera placement and clothes.
_OWN_IN_SCENE = ("zoom", "shift_x", "shift_y", "shirt_color")


def _check_clip_args(num_frames, num_refs, num_cuts):
    if not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
    if num_refs < 0:
        raise ValueError(f"num_refs must be >= 0, got {num_refs}")
    if num_cuts < 0 or num_cuts > num_frames - 1:
        raise ValueError(f"num_cuts must lie in [0, num_frames - 1] = [0, {num_frames - 1}], got {num_cuts}")


def _motion(B: int, Fr: int, num_cuts: int, generator) -> tuple[dict, torch.Tensor]:
    """Smooth per-frame nuisances (B*F rows) for B clips of F frames, with ``num_cuts`` cuts each."""

    def r(*shape):
        return torch.rand(*shape, generator=generator)

    t = torch.arange(Fr, dtype=torch.float32).view(1, Fr) / max(Fr, 8)

    def wave(amp, freq):  # a sine over the clip with a random phase per clip
        return amp * torch.sin(2 * math.pi * freq * t + 2 * math.pi * r(B, 1))

    cuts = torch.zeros(B, Fr, dtype=torch.bool)
    for b in range(B):
        if num_cuts:
            cuts[b, torch.randperm(Fr - 1, generator=generator)[:num_cuts] + 1] = True
    shot = cuts.long().cumsum(1)  # (B, F) index of the shot each frame belongs to
    K = num_cuts + 1
    shots = sample_nuisances(B * K, generator)
    base = {k: v.view(B, K, *v.shape[1:]) for k, v in shots.items()}
    nu = {}
    for k in _SHOT_KEYS:
        v = base[k]
        idx = shot.view(B, Fr, *([1] * (v.ndim - 2))).expand(B, Fr, *v.shape[2:])
        nu[k] = v.gather(1, idx)

    def pose0(k):  # each shot starts from its own pose and moves smoothly
        return base[k].gather(1, shot)

    nu["yaw"] = (pose0("yaw") * 0.6 + wave(0.35 * r(B, 1), 0.5 + r(B, 1))).clamp(-0.7, 0.7)
    nu["pitch"] = (pose0("pitch") * 0.6 + wave(0.12, 0.3 + r(B, 1))).clamp(-0.3, 0.3)
    nu["roll"] = pose0("roll") * 0.6 + wave(0.08, 0.3 + r(B, 1))
    nu["smile"] = (0.5 + wave(0.6, 0.2 + 0.5 * r(B, 1))).clamp(0, 1)
    talking = (r(B, 1) < 0.4).float()
    nu["mouth_open"] = talking * torch.sin(2 * math.pi * (2 + 2 * r(B, 1)) * t + 6 * r(B, 1)).clamp(min=0) * 0.8
    nu["brow_raise"] = (wave(0.8, 0.3 + r(B, 1)) - 0.2).clamp(0, 1)
    starts = (r(B, Fr) < 0.08).float().unsqueeze(1)  # a blink starts here and lasts about three frames
    kernel = torch.tensor([[[0.5, 1.0, 0.5]]])
    nu["blink"] = F.conv1d(starts, kernel, padding=1).squeeze(1).clamp(0, 1)
    return {k: v.reshape(B * Fr, *v.shape[2:]) for k, v in nu.items()}, cuts


def make_clips(ids, num_frames: int = 16, size: int = 64, num_refs: int = 3, num_cuts: int = 0,
               generator=None, device=None, look_from=None) -> ClipBatch:
    """Clips of identities ``ids`` (B,): smooth head turns, blinks, smiles and talking, ``num_cuts`` cuts
    (camera, background, lighting and clothes change at a random frame), and ``num_refs`` references of the
    same identity in other poses, backgrounds and clothes. ``look_from`` (B,) ids renders look-alikes (see
    :func:`identity_traits`). See :class:`ClipBatch` for the shapes."""
    ids = as_ids(ids)
    check_size(size)
    _check_clip_args(num_frames, num_refs, num_cuts)
    if len(ids) == 0:
        raise ValueError("need at least one identity id")
    B, Fr = len(ids), num_frames
    traits = identity_traits(ids, device, look_from=look_from)
    nu, cuts = _motion(B, Fr, num_cuts, generator)
    nu = to_device(nu, device)

    def repeated(n):
        return {k: v.repeat_interleave(n, 0) for k, v in traits.items()}

    frames, masks = render(repeated(Fr), nu, size)
    if num_refs:
        refs, _ = render(repeated(num_refs), sample_nuisances(B * num_refs, generator, device), size)
    else:
        refs = frames.new_zeros(0, 3, size, size)
    return ClipBatch(frames.view(B, Fr, 3, size, size), masks.view(B, Fr, size, size),
                     refs.view(B, num_refs, 3, size, size), cuts.to(frames.device), ids.to(frames.device))


def make_clip(identity: int, num_frames: int = 16, size: int = 64, num_refs: int = 3, num_cuts: int = 0,
              generator=None, device=None) -> Clip:
    """One clip of one identity (see :func:`make_clips`) as a :class:`Clip`."""
    b = make_clips([int(identity)], num_frames, size, num_refs, num_cuts, generator, device)
    return Clip(b.frames[0], b.masks[0], b.references[0], b.cuts[0].nonzero().flatten().tolist(), int(identity))


def make_scenes(ids, num_frames: int = 16, size: int = 64, num_refs: int = 3, num_cuts: int = 0,
                generator=None, device=None) -> SceneBatch:
    """Scenes of C = 2..4 characters side by side (ids (B, C)), each moving on its own, sharing background,
    lighting and cuts. Masks (B,F,C,H,W) give each character's face. See :class:`SceneBatch`."""
    ids = torch.as_tensor(ids)
    if ids.ndim != 2 or not 2 <= ids.shape[1] <= 4:
        raise ValueError(f"expected ids of shape (B, C) with 2 <= C <= 4 characters, got {tuple(ids.shape)}")
    B, Cn = ids.shape
    check_size(size)
    if size // Cn < 16:
        raise ValueError(f"{Cn} characters do not fit in {size} pixels: each needs >= 16, use size >= {16 * Cn}")
    _check_clip_args(num_frames, num_refs, num_cuts)
    flat = as_ids(ids.reshape(-1))
    clips = make_clips(flat, num_frames, size, num_refs, num_cuts, generator, device)  # for the references
    Fr = num_frames
    nu, _ = _motion(B * Cn, Fr, 0, generator)  # each character's own motion
    scene_nu, cuts = _motion(B, Fr, num_cuts, generator)  # the scene's background, light and cuts
    for k in _SHOT_KEYS:
        if k not in _OWN_IN_SCENE:
            v = scene_nu[k]
            nu[k] = v.view(B, 1, Fr, *v.shape[1:]).expand(B, Cn, Fr, *v.shape[1:]).reshape(B * Cn * Fr, *v.shape[1:])
    nu = to_device(nu, device)
    traits = {k: v.repeat_interleave(Fr, 0) for k, v in identity_traits(flat, device).items()}
    scale = 1.25 / Cn  # each character drawn at this share of the frame, in its own slot
    S = max(16, int(round(size * scale)))
    layers = character_layers(traits, nu, S)
    slot = torch.arange(Cn, dtype=torch.float32).repeat_interleave(Fr).repeat(B).to(layers.device)
    placement = {"zoom": torch.ones_like(slot), "roll": nu["roll"] * 0.5,
                 "shift_x": -1 + (2 * slot + 1) / Cn, "shift_y": torch.full_like(slot, 0.1)}
    out = place(layers, camera_theta(placement, scale), size, size).view(B, Cn, Fr, 5, size, size)
    img = background(to_device(scene_nu, layers.device), size, size).view(B, Fr, 3, size, size)
    masks = []
    for c in range(Cn):  # left to right, each character over the ones before it
        a = out[:, c, :, 3:4]
        img = img * (1 - a) + out[:, c, :, :3]
        masks.append(out[:, c, :, 4])
    refs = clips.references.view(B, Cn, num_refs, 3, size, size)
    return SceneBatch(img.clamp(0, 1) * 2 - 1, torch.stack(masks, 2), refs, cuts.to(img.device),
                      flat.view(B, Cn).to(img.device))


class ClipDataset(torch.utils.data.Dataset):
    """Clips of the given identities as a torch Dataset. Item i is a dict(frames (F,3,H,W), masks (F,H,W),
    references (R,3,H,W), cuts (F,) bool, identity) and depends only on (seed, i): the same in any worker."""

    def __init__(self, ids, num_frames: int = 16, size: int = 64, num_refs: int = 3, num_cuts: int = 0,
                 seed: int = 0):
        self.ids = as_ids(ids)
        check_size(size)
        _check_clip_args(num_frames, num_refs, num_cuts)
        self.num_frames, self.size, self.num_refs, self.num_cuts, self.seed = num_frames, size, num_refs, num_cuts, seed

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} clips")
        i = i % len(self)
        g = torch.Generator().manual_seed(int(mix32(torch.tensor(self.seed * 1_000_003 + i) & 0xFFFFFFFF)))
        with torch.no_grad():
            b = make_clips(self.ids[i:i + 1], self.num_frames, self.size, self.num_refs, self.num_cuts, g)
        return {"frames": b.frames[0], "masks": b.masks[0], "references": b.references[0], "cuts": b.cuts[0],
                "identity": int(self.ids[i])}
