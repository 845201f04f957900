"""Who is in a synthetic picture and how they are seen: identity ids, identity traits, nuisances.

* **Identity traits** come from the integer id alone (a hash of the id, no RNG state), so id 7 is the
  same person on every machine and device.
* **Nuisances** are sampled per image: pose, expression, lighting, background, camera and the shirt
  (clothing is not identity: it may change at a cut).

TRAIN ids are ``0 <= id < 1_000_000`` (:func:`train_ids`), TEST (held-out) ids are ``id >= 1_000_000``
(:func:`test_ids`).
"""

from __future__ import annotations

import math

import torch

from labkit.synth_styles import HAIR_STYLES

TRAIN_ID_LIMIT = 1_000_000

# Palettes (RGB in [0, 1]) that traits and nuisances pick from.
_SKIN = torch.tensor([[255, 226, 200], [243, 200, 166], [226, 178, 132], [198, 140, 100],
                      [160, 108, 72], [118, 76, 50], [82, 54, 38]]) / 255.0  # light to dark, blended between
_HAIR = torch.tensor([[22, 20, 22], [62, 40, 26], [112, 72, 40], [150, 58, 28], [210, 112, 48],
                      [232, 200, 110], [236, 232, 218], [140, 140, 146], [40, 80, 190], [200, 60, 130]]) / 255.0
_IRIS = torch.tensor([[96, 58, 28], [40, 26, 16], [60, 130, 210], [60, 150, 80], [120, 124, 140],
                      [150, 116, 40]]) / 255.0
_LIPS = torch.tensor([[200, 90, 100], [170, 60, 70], [220, 120, 120], [140, 70, 60], [190, 40, 60]]) / 255.0
_GLASSES = torch.tensor([[20, 20, 20], [120, 30, 30], [30, 60, 140], [200, 170, 60]]) / 255.0
_SHIRT = torch.tensor([[200, 40, 40], [40, 100, 200], [40, 160, 80], [240, 200, 40], [130, 60, 170],
                       [240, 130, 30], [30, 30, 40], [235, 235, 235], [30, 170, 170], [200, 90, 150],
                       [120, 90, 60], [90, 110, 130]]) / 255.0


# ----------------------------------------------------------------------------------------------- identity ids
def train_ids(n: int, offset: int = 0) -> torch.Tensor:
    """The ``n`` training identity ids ``offset .. offset+n-1`` (LongTensor (n,)), all below 1_000_000."""
    if n < 0 or offset < 0 or offset + n > TRAIN_ID_LIMIT:
        raise ValueError(f"train ids must lie in [0, {TRAIN_ID_LIMIT}); got offset={offset}, n={n}")
    return torch.arange(offset, offset + n, dtype=torch.long)


def test_ids(n: int, offset: int = 0) -> torch.Tensor:
    """The ``n`` held-out identity ids ``1_000_000 + offset ...`` (LongTensor (n,)), never used in training."""
    if n < 0 or offset < 0:
        raise ValueError(f"n and offset must be >= 0, got n={n}, offset={offset}")
    return torch.arange(TRAIN_ID_LIMIT + offset, TRAIN_ID_LIMIT + offset + n, dtype=torch.long)


def as_ids(ids) -> torch.Tensor:
    """Identity ids as a CPU LongTensor (N,); one-line errors for anything else."""
    ids = torch.as_tensor(ids)
    if ids.numel() == 0 and ids.ndim == 1:
        ids = ids.long()  # torch.as_tensor([]) is float: an empty list is still a list of ids
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"identity ids must be integers, got dtype {ids.dtype}")
    ids = ids.long().reshape(-1) if ids.ndim == 0 else ids.long()
    if ids.ndim != 1:
        raise ValueError(f"expected identity ids of shape (N,), got shape {tuple(ids.shape)}")
    if len(ids) and (ids.min() < 0 or ids.max() >= 2**32):
        raise ValueError("identity ids must lie in [0, 2**32)")
    return ids.cpu()


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash kept inside int64 (products stay below 2**59), identical on every device."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    return (x >> 16) ^ x


def _uniform(ids: torch.Tensor, k: int) -> torch.Tensor:
    """A uniform number in [0, 1) for trait ``k`` of each id: a pure function of (id, k)."""
    x = mix32(mix32(ids) ^ ((k * 0x9E3779B1 + 0x7F4A7C15) & 0xFFFFFFFF))
    return x.double().div(2.0**32).float()


# ----------------------------------------------------------------------------------------------- traits
#: Traits a look-alike copies from the person it imitates: everything that is colour, hair or accessory.
#: What stays its own is the geometry of the face (shape, jaw, eyes, brows, nose, mouth, ears) and its marks.
LOOK_TRAITS = ("skin_color", "hair_style", "hair_color", "hair_volume", "iris_color", "brow_color", "lip_color",
               "glasses", "glasses_color", "beard", "moustache", "earrings")


def identity_traits(ids, device=None, look_from=None) -> dict[str, torch.Tensor]:
    """The traits of each identity id (ids (N,) ints) as a dict of tensors (N,) or colours (N, 3).

    Deterministic: the same id always gives the same traits, on any device, in any batch.
    ``look_from`` (N,) ids makes look-alikes: row i keeps the face geometry of ``ids[i]`` but takes the
    colours, hair and accessories (:data:`LOOK_TRAITS`) of ``look_from[i]``. Clothing is not a trait: a
    character changes shirts between shots (see :func:`sample_nuisances`).

    Geometry ranges are wide on purpose: two people with the same colours must differ more than one
    person's pose or expression moves the face, as real faces do. Each trait reads its own hashed
    number ``u(k)``; the numbers k are fixed, so adding a trait never changes the people already drawn.
    """
    ids = as_ids(ids)

    def u(k):
        return _uniform(ids, k)

    def pick(table, k):
        return table[(u(k) * len(table)).long().clamp(max=len(table) - 1)]

    skin_pos = u(4) * (len(_SKIN) - 1)
    lo = skin_pos.floor().long().clamp(max=len(_SKIN) - 2)
    skin = torch.lerp(_SKIN[lo], _SKIN[lo + 1], (skin_pos - lo).unsqueeze(1))
    hair = (pick(_HAIR, 6) * (0.85 + 0.3 * u(7)).unsqueeze(1)).clamp(0, 1)
    t = {
        "face_width": 0.33 + 0.16 * u(0),
        "face_height": 0.44 + 0.14 * u(1),
        "jaw": 0.6 * u(2),
        "face_squareness": u(3),
        "skin_color": skin,
        "hair_style": (u(5) * len(HAIR_STYLES)).long().clamp(max=len(HAIR_STYLES) - 1),
        "hair_color": hair,
        "hair_volume": 0.96 + 0.12 * u(32),
        "eye_size": 0.65 + 0.75 * u(8),
        "eye_spacing": 0.26 + 0.28 * u(9),
        "eye_height": -0.28 + 0.24 * u(10),
        "iris_color": pick(_IRIS, 11),
        "brow_thickness": 0.012 + 0.04 * u(12),
        "brow_angle": (u(13) - 0.5) * 1.1,
        "brow_color": torch.lerp(hair, torch.full_like(hair, 0.08), (0.2 + 0.5 * u(14)).unsqueeze(1)),
        "nose_length": 0.06 + 0.18 * u(15),
        "nose_width": 0.035 + 0.07 * u(16),
        "mouth_width": 0.07 + 0.16 * u(17),
        "lip_color": torch.lerp(skin * 0.8, pick(_LIPS, 18), 0.6),
        "ear_size": 0.5 + 0.9 * u(19),
        "glasses": (u(20) < 0.3).float(),
        "glasses_color": pick(_GLASSES, 21),
        "beard": (u(22) < 0.2).float(),
        "moustache": (u(23) < 0.22).float(),
        "earrings": (u(24) < 0.25).float(),
        "mole": (u(25) < 0.3).float(),
        "mole_angle": (u(26) - 0.5) * 1.4,
        "mole_height": -0.05 + 0.45 * u(27),
        "freckles": (u(28) < 0.25).float(),
    }
    if look_from is not None:
        look_from = as_ids(look_from)
        if look_from.shape != ids.shape:
            raise ValueError(f"look_from must have the shape of ids {tuple(ids.shape)}, got {tuple(look_from.shape)}")
        donor = identity_traits(look_from)
        t.update({k: donor[k] for k in LOOK_TRAITS})
    return to_device(t, device)


def to_device(d: dict, device) -> dict:
    """The tensors of ``d`` on ``device`` (unchanged when device is None)."""
    return {k: v.to(device) if device is not None else v for k, v in d.items()}


# ----------------------------------------------------------------------------------------------- nuisances
def sample_nuisances(n: int, generator: torch.Generator | None = None, device=None, **overrides) -> dict:
    """Random pose, expression, lighting, background and camera for ``n`` images: dict of (n,) or (n, k).

    Sampling happens on the CPU with ``generator`` (so results do not depend on the device); any key
    can be fixed with an override, e.g. ``sample_nuisances(8, yaw=0.0, smile=torch.linspace(0, 1, 8))``.
    The keys are drawn in the order written here, so a fixed generator gives the same nuisances.
    """
    if n < 1:
        raise ValueError(f"need at least one image, got n={n}")

    def r(*shape):
        return torch.rand(n, *shape, generator=generator)

    def sometimes(p):
        return (r() < p).float()

    bg = r(3) * 0.8 + 0.1
    nu = {
        "yaw": (r() * 2 - 1) * 0.65,
        "pitch": (r() * 2 - 1) * 0.25,
        "roll": (r() * 2 - 1) * 0.2,
        "smile": r() ** 1.5,
        "mouth_open": sometimes(0.3) * r(),
        "brow_raise": sometimes(0.3) * r(),
        "blink": sometimes(0.12) * (0.5 + 0.5 * r()),
        "light_angle": r() * 2 * math.pi,
        "light_strength": r() * 0.5,
        "brightness": 0.85 + 0.3 * r(),
        "bg_color": bg,
        "bg_color2": (bg + (r(3) - 0.5) * 0.6).clamp(0, 1),
        "bg_angle": r() * 2 * math.pi,
        "bg_shapes": torch.cat([r(4) * 2 - 1, 0.1 + 0.3 * r(2)], 1),  # circle xy, box xy, radius, half-size
        "bg_shape_color": (bg.unsqueeze(1) + (r(2, 3) - 0.5) * 0.7).clamp(0, 1),
        "shirt_color": _SHIRT[(r() * len(_SHIRT)).long().clamp(max=len(_SHIRT) - 1)],
        "zoom": 0.88 + 0.3 * r(),
        "shift_x": (r() * 2 - 1) * 0.12,
        "shift_y": (r() * 2 - 1) * 0.10,
    }
    for key, value in overrides.items():
        if key not in nu:
            raise ValueError(f"unknown nuisance {key!r}; known: {sorted(nu)}")
        nu[key] = torch.as_tensor(value, dtype=torch.float32).expand_as(nu[key]).clone()
    return to_device(nu, device)
