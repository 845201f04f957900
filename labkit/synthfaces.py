"""Synthetic cartoon faces with known identity: the lab's world (notebook 02).

Every face is drawn from implicit shapes (ellipses, superellipses, rings, boxes) whose signed distance
in pixels goes through a smoothstep one pixel wide, so edges are anti-aliased even at 64x64. Rendering
is vectorised torch: a whole batch is a few dozen tensor operations, on the CPU or the GPU.

Identity and nuisance are kept apart:

* **Identity traits** come from the integer id alone (a hash of the id, no RNG state), so id 7 is the
  same person on every machine and device: face shape, width and jaw, skin tone, hair style and colour,
  eye size, spacing and iris colour, brow thickness, angle and colour, nose length and width, mouth
  width and lip colour, ears, glasses, beard, moustache, earrings, mole, freckles. Geometry ranges are
  wide enough that two people with the same colours and hair still look like two people.
* **Nuisances** are sampled per image: yaw, pitch and roll, smile, open mouth, raised brows, blink,
  lighting direction and strength, background colours, gradient and shapes, camera zoom and shift, and
  the shirt (clothing is not identity: it may change at a cut).

Identity ids: TRAIN ids are ``0 <= id < 1_000_000`` (:func:`train_ids`), TEST (held-out) ids are
``id >= 1_000_000`` (:func:`test_ids`). The two sets never overlap, so a recognizer trained on train ids
is measured on people it has never seen.

Layouts: images (N, 3, H, W) in [-1, 1]; masks (N, H, W) in [0, 1] (the coverage of the face shape,
the same coverage used to composite the image, so masks are exact); clips (B, F, 3, H, W).
Positive yaw turns the face towards the viewer's right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

TRAIN_ID_LIMIT = 1_000_000
HAIR_STYLES = ("bald", "crop", "long", "afro", "side part", "bun", "bob", "spiky")
# Per style: cap, cap volume, hairline height (x face height above centre), part slope, zigzag,
# back hair, back rx, back ry, back centre y (x face height), bun.
_STYLE_TABLE = torch.tensor([
    [0, 1.00, 0.9, 0.0, 0.00, 0, 1.0, 1.0, 0.0, 0],
    [1, 1.04, 0.62, 0.0, 0.00, 0, 1.0, 1.0, 0.0, 0],
    [1, 1.10, 0.50, 0.0, 0.00, 1, 1.30, 1.55, 0.55, 0],
    [1, 1.32, 0.55, 0.0, 0.00, 1, 1.65, 1.35, -0.15, 0],
    [1, 1.10, 0.45, 0.35, 0.00, 0, 1.0, 1.0, 0.0, 0],
    [1, 1.04, 0.62, 0.0, 0.00, 0, 1.0, 1.0, 0.0, 1],
    [1, 1.14, 0.25, 0.0, 0.00, 1, 1.28, 1.05, 0.25, 0],
    [1, 1.14, 0.50, 0.0, 0.12, 0, 1.0, 1.0, 0.0, 0],
])
_SKIN = torch.tensor([[255, 226, 200], [243, 200, 166], [226, 178, 132], [198, 140, 100],
                      [160, 108, 72], [118, 76, 50], [82, 54, 38]]) / 255.0
_HAIR = torch.tensor([[22, 20, 22], [62, 40, 26], [112, 72, 40], [150, 58, 28], [210, 112, 48],
                      [232, 200, 110], [236, 232, 218], [140, 140, 146], [40, 80, 190], [200, 60, 130]]) / 255.0
_IRIS = torch.tensor([[96, 58, 28], [40, 26, 16], [60, 130, 210], [60, 150, 80], [120, 124, 140],
                      [150, 116, 40]]) / 255.0
_LIPS = torch.tensor([[200, 90, 100], [170, 60, 70], [220, 120, 120], [140, 70, 60], [190, 40, 60]]) / 255.0
_GLASSES = torch.tensor([[20, 20, 20], [120, 30, 30], [30, 60, 140], [200, 170, 60]]) / 255.0
_SHIRT = torch.tensor([[200, 40, 40], [40, 100, 200], [40, 160, 80], [240, 200, 40], [130, 60, 170],
                       [240, 130, 30], [30, 30, 40], [235, 235, 235], [30, 170, 170], [200, 90, 150],
                       [120, 90, 60], [90, 110, 130]]) / 255.0


# ----------------------------------------------------------------------------------------------- identities
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


def _as_ids(ids) -> torch.Tensor:
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


def _mix32(x: torch.Tensor) -> torch.Tensor:
    # A 32-bit integer hash kept inside int64 (products stay below 2**59), identical on every device.
    x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    return (x >> 16) ^ x


def _uniform(ids: torch.Tensor, k: int) -> torch.Tensor:
    """A uniform number in [0, 1) for trait ``k`` of each id: a pure function of (id, k)."""
    x = _mix32(_mix32(ids) ^ ((k * 0x9E3779B1 + 0x7F4A7C15) & 0xFFFFFFFF))
    return x.double().div(2.0**32).float()


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
    person's pose or expression moves the face, as real faces do.
    """
    ids = _as_ids(ids)
    u = lambda k: _uniform(ids, k)

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
        look_from = _as_ids(look_from)
        if look_from.shape != ids.shape:
            raise ValueError(f"look_from must have the shape of ids {tuple(ids.shape)}, got {tuple(look_from.shape)}")
        donor = identity_traits(look_from)
        t.update({k: donor[k] for k in LOOK_TRAITS})
    return {k: v.to(device) if device is not None else v for k, v in t.items()}


# ----------------------------------------------------------------------------------------------- nuisances
def sample_nuisances(n: int, generator: torch.Generator | None = None, device=None, **overrides) -> dict:
    """Random pose, expression, lighting, background and camera for ``n`` images: dict of (n,) or (n, k).

    Sampling happens on the CPU with ``generator`` (so results do not depend on the device); any key
    can be fixed with an override, e.g. ``sample_nuisances(8, yaw=0.0, smile=torch.linspace(0, 1, 8))``.
    """
    if n < 1:
        raise ValueError(f"need at least one image, got n={n}")
    r = lambda *shape: torch.rand(n, *shape, generator=generator)
    sometimes = lambda p: (r() < p).float()
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
    return {k: v.to(device) if device is not None else v for k, v in nu.items()}


# ----------------------------------------------------------------------------------------------- drawing
def _smooth(d: torch.Tensor) -> torch.Tensor:
    """Coverage from a signed distance in pixels (negative inside): smoothstep over one pixel."""
    s = d.neg().add_(0.5).clamp_(0, 1)
    return _smoothstep_(s)


def _smoothstep_(s: torch.Tensor) -> torch.Tensor:
    # 3s^2 - 2s^3, in place where possible: full-size temporaries are what costs most on a CPU.
    out = s * s
    return out.mul_(torch.addcmul(_THREE.to(s.device), s, _MINUS_TWO.to(s.device)))


_HALF, _THREE, _MINUS_TWO = torch.tensor(0.5), torch.tensor(3.0), torch.tensor(-2.0)


def _ellipse(xr, yr, rx, ry, px: float) -> torch.Tensor:
    """Coverage of (xr/rx)^2 + (yr/ry)^2 <= 1. Offsets xr (N,1,W) and yr (N,H,1) keep most work separable."""
    # Radii below half a pixel would make the distance estimate blow up along the long axis; draw such
    # ellipses half a pixel thick and fade them by how much thinner they really are.
    rmin = 0.5 / px
    rx, ry = torch.as_tensor(rx, dtype=torch.float32), torch.as_tensor(ry, dtype=torch.float32)
    fade = (rx / rmin).clamp(max=1) * (ry / rmin).clamp(max=1)
    rx, ry = rx.clamp(min=rmin), ry.clamp(min=rmin)
    u, v = xr / rx, yr / ry
    inside = (1 - u * u) - v * v  # > 0 inside the ellipse
    grad2 = (u / rx).square() * (4 / px**2) + (v / ry).square() * (4 / px**2) + 1e-12  # |grad|^2, pixel units
    # inside / |grad| is the signed distance (in pixels) to the edge, close to the edge.
    s = torch.addcmul(_HALF.to(inside.device), inside, grad2.rsqrt_()).clamp_(0, 1)
    return _smoothstep_(s).mul_(fade.to(s.device)) if bool((fade < 1).any()) else _smoothstep_(s)


def _over(C, A, color, a, rows=slice(None), cols=slice(None), alpha=True):
    """Paint ``color`` (N,3,1,1) with coverage ``a`` (N,h,w) over premultiplied layers C (N,3,S,S), A (N,1,S,S)."""
    a = a.unsqueeze(1)
    Cv = C[:, :, rows, cols]
    Cv.lerp_(color.expand_as(Cv), a)
    if alpha:
        Av = A[:, :, rows, cols]
        Av.lerp_(Av.new_ones(1, 1, 1, 1).expand_as(Av), a)


def _span(lo: float, hi: float, S: int) -> slice:
    return slice(max(0, int(math.floor((lo + 1) / 2 * S))), min(S, int(math.ceil((hi + 1) / 2 * S))))


def _side(x, mid, left, right):
    """Per-column choice between the left and right copy of a paired feature (eyes, brows, ears)."""
    return torch.where(x < mid, left, right)


def _character_layers(t: dict, nu: dict, S: int) -> torch.Tensor:
    """One character per row in a canonical camera: (N, 5, S, S) = premultiplied RGB, alpha, face mask."""
    dev = t["face_width"].device
    N = t["face_width"].shape[0]
    P = lambda v: v.float().view(N, 1, 1)
    col = lambda c: c.float().view(N, 3, 1, 1)
    px = S / 2
    grid = (torch.arange(S, device=dev, dtype=torch.float32) + 0.5) / S * 2 - 1
    X, Y = grid.view(1, 1, S), grid.view(1, S, 1)
    rf, cf = _span(-0.62, 0.7, S), _span(-0.78, 0.78, S)  # the face region: features are drawn only there
    Xf, Yf = X[:, :, cf], Y[:, rf, :]
    rb = _span(0.15, 1.0, S)
    Yb = Y[:, rb, :]
    layers = torch.zeros(N, 5, S, S, device=dev)
    C, A = layers[:, :3], layers[:, 3:4]

    yaw, pitch = P(nu["yaw"]), P(nu["pitch"])
    sy, cy_ = torch.sin(yaw), torch.cos(yaw)
    fw, fh = P(t["face_width"]) * (1 - 0.06 * sy.abs()), P(t["face_height"])
    fx, fy = 0.04 * sy, torch.full_like(fw, -0.06)
    skin, hair = col(t["skin_color"]), col(t["hair_color"])
    style = _STYLE_TABLE.to(dev)[t["hair_style"]]
    st = lambda i: style[:, i].view(N, 1, 1)
    hx = fx - 0.22 * fw * sy  # the hair mass shows the back of the head, so it moves against the turn

    # Body, neck, back hair
    _over(C, A, col(nu["shirt_color"]), _ellipse(X - fx * 0.5, Yb - (fy + fh + 0.78), 0.72, 0.62, px),
          rows=rb)
    back = st(5) * _ellipse(X - hx, Y - (fy + st(8) * fh), st(6) * fw * P(t["hair_volume"]), st(7) * fh, px)
    bun = st(9) * _ellipse(X - hx, Y - (fy - 1.12 * fh), 0.17, 0.15, px)
    _over(C, A, hair * 0.9, torch.maximum(back, bun))
    _over(C, A, skin * 0.85, _ellipse(X - fx, Yb - (fy + fh * 0.95), fw * 0.42, 0.25, px), rows=rb)

    # Ears (behind the face): the ear turning away slides behind the head, the other one shows more.
    theta_e = torch.asin(P(t["eye_spacing"]))
    turn_r, turn_l = sy.clamp(min=0), (-sy).clamp(min=0)
    ex_l, ex_r = fx - fw * (1 - 0.3 * turn_l), fx + fw * (1 - 0.3 * turn_r)
    ear_w = 0.075 * P(t["ear_size"])
    mid = fx
    erx = _side(Xf, mid, ear_w * (1 + 0.6 * turn_r), ear_w * (1 + 0.6 * turn_l))
    exs = _side(Xf, mid, ex_l, ex_r)
    ear_y = fy + P(t["eye_height"]) * fh + 0.06 + 0.3 * torch.sin(pitch) * fh
    _over(C, A, skin * 0.9, _ellipse(Xf - exs, Yf - ear_y, erx, 0.11 * P(t["ear_size"]), px), rf, cf)
    ring = _ellipse(Xf - exs, Yf - (ear_y + 0.11 * P(t["ear_size"]) + 0.015), 0.026, 0.026, px)
    _over(C, A, torch.tensor([0.95, 0.78, 0.2], device=dev).view(1, 3, 1, 1).expand(N, 3, 1, 1),
          P(t["earrings"]) * ring, rf, cf)

    # The face: a superellipse whose lower half narrows with the jaw, lit from a direction.
    taper = fw * (1 - P(t["jaw"]) * ((Y - fy) / fh).clamp(0, 1).square())
    p = 2 + 1.5 * P(t["face_squareness"])
    q = (((X - fx) / taper).abs().pow(p) + ((Y - fy) / fh).abs().pow(p)).pow(1 / p)
    face = _smooth((q - 1) * (torch.minimum(fw, fh) * px))
    _over(C, A, skin, face)
    facef = face[:, rf, cf]

    # Features live on a sphere of radius fw: a feature at angle a appears at fx + fw sin(a + yaw) and is
    # foreshortened by cos(a + yaw) -- so turning the head moves them non-rigidly.
    sp = torch.sin(pitch)
    ey = fy + P(t["eye_height"]) * fh + 0.5 * sp * fh
    a_l, a_r = -theta_e + yaw, theta_e + yaw
    x_l, x_r = fx + fw * torch.sin(a_l), fx + fw * torch.sin(a_r)
    fore_l = (torch.cos(a_l) / torch.cos(theta_e)).clamp(min=0)
    fore_r = (torch.cos(a_r) / torch.cos(theta_e)).clamp(min=0)
    mid = (x_l + x_r) / 2
    exs, fore = _side(Xf, mid, x_l, x_r), _side(Xf, mid, fore_l, fore_r)
    es = P(t["eye_size"])
    open_ = (1 - P(nu["blink"])) * (1 - 0.3 * P(nu["smile"]))
    erx, ery = 0.085 * es * fore, 0.062 * es * open_
    dark = torch.tensor([0.12, 0.08, 0.08], device=dev).view(1, 3, 1, 1).expand(N, 3, 1, 1)
    lw = 0.9 / px
    _over(C, A, dark, _ellipse(Xf - exs, Yf - ey, erx + lw * fore, ery + lw, px), rf, cf, alpha=False)
    white = _ellipse(Xf - exs, Yf - ey, erx, ery, px)
    _over(C, A, torch.ones_like(skin) * 0.97, white, rf, cf, alpha=False)
    ix = exs + 0.02 * sy
    _over(C, A, col(t["iris_color"]), _ellipse(Xf - ix, Yf - ey, 0.05 * es * fore, 0.05 * es, px) * white,
          rf, cf, alpha=False)
    _over(C, A, dark * 0.3, _ellipse(Xf - ix, Yf - ey, 0.022 * es * fore, 0.022 * es, px) * white,
          rf, cf, alpha=False)

    # Brows: tilted by the identity's brow angle (a shear), raised by the expression.
    by = ey - 0.085 * es - 0.035 - 0.05 * P(nu["brow_raise"])
    sign = _side(Xf, mid, -torch.ones_like(fw), torch.ones_like(fw))
    ub = (Xf - exs) / (0.1 * fore + 1e-3)
    brow_y = Yf - by + sign * torch.tan(P(t["brow_angle"])) * (Xf - exs) + 0.03 * (1 - ub.square()).clamp(min=0)
    brow = _ellipse(Xf - exs, brow_y, 0.1 * fore, P(t["brow_thickness"]), px)
    _over(C, A, col(t["brow_color"]), brow, rf, cf, alpha=False)

    # Freckles on the cheeks, a mole, the nose (which sticks out, so it moves more with yaw), the mouth.
    cheek = _ellipse(Xf - exs, Yf - (ey + 0.13), 0.1 * fore, 0.06, px)
    dots = (torch.sin(Xf * 60 + 1.0) * torch.sin(Yf * 60 + 2.0) - 0.55).clamp(0, 1) * 2.2
    _over(C, A, skin * 0.62, P(t["freckles"]) * cheek * dots.clamp(max=1) * facef, rf, cf, alpha=False)
    a_m = P(t["mole_angle"]) + yaw
    mole = _ellipse(Xf - (fx + fw * torch.sin(a_m)), Yf - (fy + P(t["mole_height"]) * fh + 0.5 * sp * fh),
                    0.022 * torch.cos(a_m).clamp(min=0), 0.022, px)
    _over(C, A, skin * 0.35, P(t["mole"]) * mole * facef, rf, cf, alpha=False)
    nl, nw = P(t["nose_length"]), P(t["nose_width"])
    nx, ny = fx + (fw + 0.1) * sy, ey + 0.06 + nl * 0.6
    nose = _ellipse(Xf - nx, Yf - ny, nw * (0.7 + 0.3 * cy_), nl * 0.55, px)
    _over(C, A, skin * 0.8, nose, rf, cf, alpha=False)
    nostril = _ellipse(Xf - nx, Yf - (ny + nl * 0.35), nw * 0.7 * (0.7 + 0.3 * cy_), 0.018, px)
    _over(C, A, skin * 0.55, nostril, rf, cf, alpha=False)

    mx, my = fx + fw * 0.97 * sy, ny + nl * 0.55 + 0.08
    mw = P(t["mouth_width"]) * (0.45 + 0.55 * cy_) * (1 + 0.2 * P(nu["smile"]))
    um = ((Xf - mx) / mw).square()
    curve = 0.055 * P(nu["smile"]) - 0.01
    mo = P(nu["mouth_open"])
    beard_a = P(t["beard"]) * _smooth((my + 0.03 - 0.3 * ((Xf - mx) / fw).square() - Yf) * px) * facef
    _over(C, A, hair * 0.8, beard_a, rf, cf, alpha=False)
    must = _ellipse(Xf - mx, Yf - (my - 0.035 - 0.035 * mo) - 0.03 * um, mw * 1.05, 0.022, px)
    _over(C, A, hair * 0.8, P(t["moustache"]) * must, rf, cf, alpha=False)
    lips = _ellipse(Xf - mx, Yf - my + curve * um, mw, 0.028 + 0.07 * mo, px)
    _over(C, A, col(t["lip_color"]), lips, rf, cf, alpha=False)
    inner = _ellipse(Xf - mx, Yf - my + curve * um, mw * 0.8, 0.06 * mo + 0.004, px) * lips
    _over(C, A, torch.tensor([0.3, 0.05, 0.08], device=dev).view(1, 3, 1, 1).expand(N, 3, 1, 1), inner, rf, cf,
          alpha=False)

    # Hair cap: an ellipse over the head, cut away above the hairline where it would cover the face.
    vol = st(1) * P(t["hair_volume"])
    hy = fy - 0.38 * fh - 0.3 * sp * fh
    cap = _ellipse(X - hx, Y - hy, fw * 1.1 * vol, fh * 0.82 * vol, px)
    hairline = fy - st(2) * fh - 0.3 * sp * fh + st(3) * (X - hx) + st(4) * torch.sin((X - hx) * 40).abs()
    below = _smooth((hairline - Y) * px)
    _over(C, A, hair, st(0) * cap * (1 - face * below))

    # Glasses: two rings and a bridge, on top of everything.
    lrx = 0.105 * es.clamp(max=1.05)
    lens = _ellipse(Xf - exs, Yf - ey, lrx * fore, 0.085, px)
    rim = _ellipse(Xf - exs, Yf - ey, lrx * fore + 1.1 / px, 0.085 + 1.1 / px, px) - lens
    gap = (x_r - x_l).abs() / 2 - lrx * (fore_l + fore_r) / 2
    bridge = _smooth((Yf - ey + 0.02).abs() * px - 0.8) * _smooth(((Xf - mid).abs() - gap - 0.01) * px)
    _over(C, A, col(t["glasses_color"]), P(t["glasses"]) * torch.maximum(rim, bridge) * facef, rf, cf, alpha=False)

    # Lighting: a linear shading ramp across the character in the light's direction.
    la, ls = P(nu["light_angle"]), P(nu["light_strength"])
    shade = P(nu["brightness"]) + ls * (torch.cos(la) * (X - fx) / fw + torch.sin(la) * (Y - fy) / fh) * 0.5
    C.mul_(shade.clamp(0.3, 1.6).unsqueeze(1)).clamp_(0, 1)
    layers[:, 4] = face
    return layers


def _background(nu: dict, H: int, W: int) -> torch.Tensor:
    """Backgrounds (N, 3, H, W) in [0, 1]: a two-colour gradient plus a soft circle and a box."""
    N = nu["bg_color"].shape[0]
    dev = nu["bg_color"].device
    P = lambda v: v.float().view(N, 1, 1)
    x = ((torch.arange(W, device=dev) + 0.5) / W * 2 - 1).view(1, 1, W)
    y = ((torch.arange(H, device=dev) + 0.5) / H * 2 - 1).view(1, H, 1)
    g = (torch.cos(P(nu["bg_angle"])) * x + torch.sin(P(nu["bg_angle"])) * y) * 0.5 + 0.5
    c1, c2 = nu["bg_color"].view(N, 3, 1, 1), nu["bg_color2"].view(N, 3, 1, 1)
    img = torch.addcmul(c1, c2 - c1, g.unsqueeze(1))
    s = nu["bg_shapes"]
    px = min(H, W) / 2
    circle = _ellipse(x - P(s[:, 0]), y - P(s[:, 1]), P(s[:, 4]), P(s[:, 4]), px) * 0.7
    img.lerp_(nu["bg_shape_color"][:, 0].view(N, 3, 1, 1).expand(N, 3, H, W), circle.unsqueeze(1))
    box = _smooth(torch.maximum((x - P(s[:, 2])).abs() - P(s[:, 5]), (y - P(s[:, 3])).abs() - P(s[:, 5])) * px) * 0.7
    img.lerp_(nu["bg_shape_color"][:, 1].view(N, 3, 1, 1).expand(N, 3, H, W), box.unsqueeze(1))
    return img * P(nu["brightness"]).unsqueeze(1).clamp(0.7, 1.3)


def _place(layers: torch.Tensor, theta: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Warp canonical layers (N, K, S, S) into the camera with affine ``theta`` (N, 2, 3) -> (N, K, H, W)."""
    grid = F.affine_grid(theta, [layers.shape[0], layers.shape[1], H, W], align_corners=False)
    S = layers.shape[-1]
    # Clamping the vertical source coordinate lets the body continue below the canonical frame.
    grid = torch.stack([grid[..., 0], grid[..., 1].clamp(-1 + 1 / S, 1 - 1 / S)], -1)
    return F.grid_sample(layers, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _camera_theta(nu: dict, scale=1.0, cx=0.0, cy=0.0) -> torch.Tensor:
    """Affine map from output to canonical coordinates for zoom, roll and shift (and scene placement)."""
    z = nu["zoom"].float() * scale
    r = nu["roll"].float()
    sx, sy = nu["shift_x"].float() + cx, nu["shift_y"].float() + cy
    cos, sin = torch.cos(r) / z, torch.sin(r) / z
    row0 = torch.stack([cos, -sin, -(cos * sx - sin * sy)], -1)
    row1 = torch.stack([sin, cos, -(sin * sx + cos * sy)], -1)
    return torch.stack([row0, row1], 1)


def _check_size(size):
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an int >= 16 (pixels per side), got {size!r}")


def render(traits: dict, nuisances: dict, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Render one face per row of ``traits``/``nuisances`` (dicts of length N).

    Returns images (N, 3, size, size) in [-1, 1] and face masks (N, size, size) in [0, 1].
    """
    _check_size(size)
    n = traits["face_width"].shape[0]
    for name, d in (("traits", traits), ("nuisances", nuisances)):
        for k, v in d.items():
            if v.shape[0] != n:
                raise ValueError(f"{name}[{k!r}] has batch {tuple(v.shape)}, expected ({n}, ...) like face_width")
    layers = _character_layers(traits, nuisances, size)
    out = _place(layers, _camera_theta(nuisances), size, size)
    img = _background(nuisances, size, size) * (1 - out[:, 3:4]) + out[:, :3]
    return img.clamp(0, 1) * 2 - 1, out[:, 4]


def render_faces(ids, size: int = 64, generator=None, device=None, **nuisance_overrides):
    """Faces of identities ``ids`` (N,) with random nuisances -> (images (N,3,H,W) in [-1,1], masks (N,H,W))."""
    ids = _as_ids(ids)
    if len(ids) == 0:
        raise ValueError("need at least one identity id")
    nu = sample_nuisances(len(ids), generator, device, **nuisance_overrides)
    return render(identity_traits(ids, device), nu, size)


# ----------------------------------------------------------------------------------------------- clips
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


def _check_clip_args(num_frames, num_refs, num_cuts):
    if not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
    if num_refs < 0:
        raise ValueError(f"num_refs must be >= 0, got {num_refs}")
    if num_cuts < 0 or num_cuts > num_frames - 1:
        raise ValueError(f"num_cuts must lie in [0, num_frames - 1] = [0, {num_frames - 1}], got {num_cuts}")


def _motion(B: int, Fr: int, num_cuts: int, generator) -> tuple[dict, torch.Tensor]:
    """Smooth per-frame nuisances (B*F rows) for B clips of F frames, with ``num_cuts`` cuts each."""
    r = lambda *s: torch.rand(*s, generator=generator)
    t = torch.arange(Fr, dtype=torch.float32).view(1, Fr) / max(Fr, 8)
    wave = lambda amp, freq: amp * torch.sin(2 * math.pi * freq * t + 2 * math.pi * r(B, 1))
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
    pose0 = lambda k: base[k].gather(1, shot)  # each shot starts from its own pose and moves smoothly
    nu["yaw"] = (pose0("yaw") * 0.6 + wave(0.35 * r(B, 1), 0.5 + r(B, 1))).clamp(-0.7, 0.7)
    nu["pitch"] = (pose0("pitch") * 0.6 + wave(0.12, 0.3 + r(B, 1))).clamp(-0.3, 0.3)
    nu["roll"] = pose0("roll") * 0.6 + wave(0.08, 0.3 + r(B, 1))
    nu["smile"] = (0.5 + wave(0.6, 0.2 + 0.5 * r(B, 1))).clamp(0, 1)
    talking = (r(B, 1) < 0.4).float()
    nu["mouth_open"] = talking * torch.sin(2 * math.pi * (2 + 2 * r(B, 1)) * t + 6 * r(B, 1)).clamp(min=0) * 0.8
    nu["brow_raise"] = (wave(0.8, 0.3 + r(B, 1)) - 0.2).clamp(0, 1)
    starts = (r(B, Fr) < 0.08).float().unsqueeze(1)
    kernel = torch.tensor([[[0.5, 1.0, 0.5]]])
    nu["blink"] = F.conv1d(starts, kernel, padding=1).squeeze(1).clamp(0, 1)
    return {k: v.reshape(B * Fr, *v.shape[2:]) for k, v in nu.items()}, cuts


def make_clips(ids, num_frames: int = 16, size: int = 64, num_refs: int = 3, num_cuts: int = 0,
               generator=None, device=None, look_from=None) -> ClipBatch:
    """Clips of identities ``ids`` (B,): smooth head turns, blinks, smiles and talking, ``num_cuts`` cuts
    (camera, background, lighting and clothes change at a random frame), and ``num_refs`` references of the
    same identity in other poses, backgrounds and clothes. ``look_from`` (B,) ids renders look-alikes (see
    :func:`identity_traits`). See :class:`ClipBatch` for the shapes."""
    ids = _as_ids(ids)
    _check_size(size)
    _check_clip_args(num_frames, num_refs, num_cuts)
    if len(ids) == 0:
        raise ValueError("need at least one identity id")
    B, Fr = len(ids), num_frames
    traits = identity_traits(ids, device, look_from=look_from)
    nu, cuts = _motion(B, Fr, num_cuts, generator)
    nu = {k: v.to(device) if device is not None else v for k, v in nu.items()}
    rep = lambda n: {k: v.repeat_interleave(n, 0) for k, v in traits.items()}
    frames, masks = render(rep(Fr), nu, size)
    if num_refs:
        refs, _ = render(rep(num_refs), sample_nuisances(B * num_refs, generator, device), size)
    else:
        refs = frames.new_zeros(B * 0, 3, size, size)
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
    _check_size(size)
    if size // Cn < 16:
        raise ValueError(f"{Cn} characters do not fit in {size} pixels: each needs >= 16, use size >= {16 * Cn}")
    _check_clip_args(num_frames, num_refs, num_cuts)
    flat = _as_ids(ids.reshape(-1))
    clips = make_clips(flat, num_frames, size, num_refs, num_cuts, generator, device)  # references and motion
    Fr = num_frames
    nu, cuts = _motion(B * Cn, Fr, 0, generator)
    scene_nu, cuts = _motion(B, Fr, num_cuts, generator)  # shared background, light and cuts
    shared = {k: scene_nu[k].view(B, 1, Fr, *scene_nu[k].shape[1:]).expand(B, Cn, Fr, *scene_nu[k].shape[1:])
              .reshape(B * Cn * Fr, *scene_nu[k].shape[1:]) for k in _SHOT_KEYS}
    # Background and light are the scene's; each character keeps its own camera placement and clothes.
    nu.update({k: v for k, v in shared.items() if k not in ("zoom", "shift_x", "shift_y", "shirt_color")})
    nu = {k: v.to(device) if device is not None else v for k, v in nu.items()}
    traits = {k: v.repeat_interleave(Fr, 0) for k, v in identity_traits(flat, device).items()}
    scale = 1.25 / Cn
    S = max(16, int(round(size * scale)))
    layers = _character_layers(traits, nu, S)
    slot = torch.arange(Cn, dtype=torch.float32).repeat_interleave(Fr).repeat(B).to(layers.device)
    place = {"zoom": torch.ones_like(slot), "roll": nu["roll"] * 0.5,
             "shift_x": -1 + (2 * slot + 1) / Cn, "shift_y": torch.full_like(slot, 0.1)}
    out = _place(layers, _camera_theta(place, scale), size, size).view(B, Cn, Fr, 5, size, size)
    bg_nu = {k: scene_nu[k].to(layers.device) for k in scene_nu}
    img = _background(bg_nu, size, size).view(B, Fr, 3, size, size)
    masks = []
    for c in range(Cn):
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
        self.ids = _as_ids(ids)
        _check_size(size)
        _check_clip_args(num_frames, num_refs, num_cuts)
        self.num_frames, self.size, self.num_refs, self.num_cuts, self.seed = num_frames, size, num_refs, num_cuts, seed

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} clips")
        i = i % len(self)
        g = torch.Generator().manual_seed(int(_mix32(torch.tensor(self.seed * 1_000_003 + i) & 0xFFFFFFFF)))
        with torch.no_grad():
            b = make_clips(self.ids[i:i + 1], self.num_frames, self.size, self.num_refs, self.num_cuts, g)
        return {"frames": b.frames[0], "masks": b.masks[0], "references": b.references[0], "cuts": b.cuts[0],
                "identity": int(self.ids[i])}


# ----------------------------------------------------------------------------------------------- command line
def benchmark(batch: int = 256, size: int = 64, repeats: int = 7, device=None) -> dict:
    """Frames per second of :func:`render` and :func:`make_clips` (clips of 16 frames): best and median run."""
    import time

    device = torch.device(device or "cpu")
    g = torch.Generator().manual_seed(0)
    ids = train_ids(batch)
    traits = identity_traits(ids, device)
    nu = sample_nuisances(batch, g, device)
    def best_seconds(fn):
        # The best of several runs: other processes on a shared machine only ever slow a run down.
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return min(times), sorted(times)[len(times) // 2]

    with torch.no_grad():
        best, median = best_seconds(lambda: render(traits, nu, size))
        render_fps, render_median = batch / best, batch / median
        n_clips = max(1, batch // 16)
        best, median = best_seconds(lambda: make_clips(ids[:n_clips], 16, size, 0, 1, generator=g, device=device))
        clip_fps, clip_median = n_clips * 16 / best, n_clips * 16 / median
        cpu_fps = _cpu_frames_per_second(traits, nu, size, repeats) if device.type == "cpu" else float("nan")
    return {"render_fps": render_fps, "clip_fps": clip_fps, "render_fps_median": render_median,
            "clip_fps_median": clip_median, "render_fps_per_core": cpu_fps, "batch": batch, "size": size,
            "threads": torch.get_num_threads(), "device": str(device)}


def _cpu_frames_per_second(traits: dict, nu: dict, size: int, repeats: int) -> float:
    """Frames per CPU-second of one thread rendering ``traits``/``nu``: the best of ``repeats`` runs.

    CPU time counts only the cycles this process got, so unlike wall-clock time it does not drop when other
    jobs share the cores. Batches are independent, so k cores running k workers (e.g. DataLoader workers)
    render about k times this rate.
    """
    import time

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        n = traits["face_width"].shape[0]
        render(traits, nu, size)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.process_time()
            render(traits, nu, size)
            best = min(best, time.process_time() - t0)
    finally:
        torch.set_num_threads(threads)
    return n / max(best, 1e-9)


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="python -m labkit.synthfaces", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="print rendering frames per second")
    b.add_argument("--batch", type=int, default=256)
    b.add_argument("--size", type=int, default=64)
    b.add_argument("--device", default=None)
    gr = sub.add_parser("grid", help="save an identity grid (rows identities, columns poses) as PNG")
    gr.add_argument("out")
    gr.add_argument("--ids", type=int, default=8)
    gr.add_argument("--test", action="store_true", help="use held-out ids")
    args = parser.parse_args(argv)
    if args.cmd == "bench":
        r = benchmark(args.batch, args.size, device=args.device)
        print(f"synthfaces {r['size']}x{r['size']} on {r['device']} ({r['threads']} threads), batch {r['batch']}: "
              f"render {r['render_fps']:.0f} frames/s (median {r['render_fps_median']:.0f}), "
              f"make_clips {r['clip_fps']:.0f} frames/s (median {r['clip_fps_median']:.0f})")
        if r["render_fps_per_core"] == r["render_fps_per_core"]:  # not nan: measured on the CPU
            print(f"  CPU time, one thread: render {r['render_fps_per_core']:.0f} frames per CPU-second; "
                  f"2 cores with one worker each: about {2 * r['render_fps_per_core']:.0f} frames/s "
                  "(wall-clock figures above drop when other jobs share the cores)")
    else:
        from PIL import Image

        from labkit.common import image_strip

        ids = (test_ids if args.test else train_ids)(args.ids)
        images = identity_grid(ids)
        Image.fromarray(image_strip(images, ncols=images.shape[0] // len(ids))).save(args.out)
        print(f"wrote {args.out}")


def identity_grid(ids, size: int = 64) -> torch.Tensor:
    """Each identity (rows) under 8 fixed poses and expressions (columns): images (N*8, 3, size, size)."""
    ids = _as_ids(ids)
    K = 8
    over = dict(yaw=torch.tensor([0, -0.6, 0.6, 0, 0.3, -0.3, 0, 0.15]),
                pitch=torch.tensor([0, 0, 0, 0.25, -0.2, 0, 0, 0]),
                smile=torch.tensor([0.3, 0.2, 0.2, 0.9, 0, 1, 0.3, 0.5]),
                mouth_open=torch.tensor([0, 0, 0, 0, 0.8, 0, 0, 0.6]),
                blink=torch.tensor([0, 0, 0, 0, 0, 0, 1, 0]),
                brow_raise=torch.tensor([0, 0, 0, 0, 1, 0, 0, 0]))
    over = {k: v.repeat(len(ids)) for k, v in over.items()}
    g = torch.Generator().manual_seed(1)
    return render_faces(ids.repeat_interleave(K), size, g, **over)[0]


if __name__ == "__main__":
    main()
