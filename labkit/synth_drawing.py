"""Drawing the synthetic faces of :mod:`labkit.synthfaces`: traits and nuisances in, images and masks out.

Every part of a character is an implicit shape (ellipse, superellipse, box) whose signed distance in pixels
goes through a smoothstep one pixel wide, so edges are anti-aliased even at 64x64. A whole batch is a few
dozen tensor operations, on the CPU or the GPU.

A character is drawn in a canonical camera (the face centred, lengths in units of half the image side) as
premultiplied colour, alpha and face-mask layers, then warped into the picture by the camera (zoom, roll,
shift) and laid over a background. Parts are painted back to front: body, back hair, neck, ears, face,
eyes, brows, freckles and mole, nose, beard, moustache, mouth, hair cap, glasses; then the light.

The numbers that shape each part are named in :mod:`labkit.synth_styles`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from labkit.synth_styles import (
    BACKDROP,
    BODY,
    BROWS,
    CAP,
    EARS,
    EYES,
    GLASSES,
    HAIR_STYLE_SHAPES,
    HEAD,
    LIGHT,
    MARKS,
    MOUTH,
    NOSE,
    HairStyle,
)

# ----------------------------------------------------------------------------------------------- shapes
_HALF, _THREE, _MINUS_TWO = torch.tensor(0.5), torch.tensor(3.0), torch.tensor(-2.0)


def _smoothstep_(s: torch.Tensor) -> torch.Tensor:
    # 3s^2 - 2s^3, in place where possible: full-size temporaries are what costs most on a CPU.
    out = s * s
    return out.mul_(torch.addcmul(_THREE.to(s.device), s, _MINUS_TWO.to(s.device)))


def _smooth(d: torch.Tensor) -> torch.Tensor:
    """Coverage from a signed distance in pixels (negative inside): smoothstep over one pixel."""
    s = d.neg().add_(0.5).clamp_(0, 1)
    return _smoothstep_(s)


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


def _span(lo: float, hi: float, S: int) -> slice:
    """The pixel rows (or columns) of S that cover canonical coordinates lo..hi."""
    return slice(max(0, int(math.floor((lo + 1) / 2 * S))), min(S, int(math.ceil((hi + 1) / 2 * S))))


def _side(x, mid, left, right):
    """Per-column choice between the left and right copy of a paired feature (eyes, brows, ears)."""
    return torch.where(x < mid, left, right)


def _per_row(v: torch.Tensor) -> torch.Tensor:
    """A trait or nuisance (N,) as (N, 1, 1), to broadcast over an image."""
    return v.float().view(-1, 1, 1)


def _colour(c) -> torch.Tensor:
    """Colours (N, 3) as (N, 3, 1, 1)."""
    return c.float().view(-1, 3, 1, 1)


def _fixed_colour(rgb: tuple, N: int, device) -> torch.Tensor:
    return torch.tensor(rgb, device=device).view(1, 3, 1, 1).expand(N, 3, 1, 1)


# ----------------------------------------------------------------------------------------------- the canvas
@dataclass
class _Canvas:
    """Premultiplied layers (N, 5, S, S) being painted, and the canonical coordinates of their pixels.

    X (1,1,S) and Y (1,S,1) cover the whole canvas; Xf, Yf the feature band (rows ``rf``, columns ``cf``),
    Yb the body band (rows ``rb``). Most parts are drawn only inside their band, which saves work.
    """

    layers: torch.Tensor
    X: torch.Tensor
    Y: torch.Tensor
    rf: slice
    cf: slice
    rb: slice
    px: float  # pixels per canonical unit

    @classmethod
    def empty(cls, N: int, S: int, device) -> _Canvas:
        grid = (torch.arange(S, device=device, dtype=torch.float32) + 0.5) / S * 2 - 1
        return cls(torch.zeros(N, 5, S, S, device=device), grid.view(1, 1, S), grid.view(1, S, 1),
                   _span(*HEAD.feature_rows, S), _span(*HEAD.feature_cols, S), _span(*HEAD.body_rows, S), S / 2)

    @property
    def Xf(self):
        return self.X[:, :, self.cf]

    @property
    def Yf(self):
        return self.Y[:, self.rf, :]

    @property
    def Yb(self):
        return self.Y[:, self.rb, :]

    def paint(self, colour, coverage, rows=slice(None), cols=slice(None), alpha=True):
        """Paint ``colour`` (N,3,1,1) with ``coverage`` (N,h,w) over the layers (rows and columns a band).

        ``alpha=False`` for features inside the face: the face already made those pixels opaque.
        """
        a = coverage.unsqueeze(1)
        Cv = self.layers[:, :3, rows, cols]
        Cv.lerp_(colour.expand_as(Cv), a)
        if alpha:
            Av = self.layers[:, 3:4, rows, cols]
            Av.lerp_(Av.new_ones(1, 1, 1, 1).expand_as(Av), a)

    def paint_feature(self, colour, coverage):
        """Paint a feature inside the face (the feature band, alpha untouched)."""
        self.paint(colour, coverage, self.rf, self.cf, alpha=False)


@dataclass
class _Pose:
    """Where the head is in the canonical camera, all (N, 1, 1)."""

    yaw: torch.Tensor
    sin_yaw: torch.Tensor
    cos_yaw: torch.Tensor
    sin_pitch: torch.Tensor
    fx: torch.Tensor  # face centre
    fy: torch.Tensor
    fw: torch.Tensor  # face half-width (narrower when turned) and half-height
    fh: torch.Tensor
    hx: torch.Tensor  # centre of the hair mass

    @classmethod
    def of(cls, t: dict, nu: dict) -> _Pose:
        yaw = _per_row(nu["yaw"])
        sy = torch.sin(yaw)
        fw = _per_row(t["face_width"]) * (1 - HEAD.narrowing * sy.abs())
        fx = HEAD.shift * sy
        return cls(yaw, sy, torch.cos(yaw), torch.sin(_per_row(nu["pitch"])), fx, torch.full_like(fw, HEAD.centre_y),
                   fw, _per_row(t["face_height"]), fx - HEAD.hair_lag * fw * sy)


@dataclass
class _EyeLine:
    """The two eyes on the head's sphere, per feature-band column: the nearer eye's centre and
    foreshortening. A feature at angle a appears at fx + fw sin(a + yaw), foreshortened by cos(a + yaw),
    so turning the head moves the features non-rigidly."""

    y: torch.Tensor  # eye centre height
    size: torch.Tensor  # eye size trait
    x_left: torch.Tensor
    x_right: torch.Tensor
    fore_left: torch.Tensor
    fore_right: torch.Tensor
    mid: torch.Tensor  # between the eyes
    x: torch.Tensor  # the nearer eye's centre, per column
    fore: torch.Tensor  # its foreshortening, per column

    @classmethod
    def of(cls, t: dict, pose: _Pose, Xf: torch.Tensor) -> _EyeLine:
        theta = torch.asin(_per_row(t["eye_spacing"]))  # each eye's angle from the nose, on the head's sphere
        y = pose.fy + _per_row(t["eye_height"]) * pose.fh + EYES.pitch_shift * pose.sin_pitch * pose.fh
        a_l, a_r = -theta + pose.yaw, theta + pose.yaw
        x_l, x_r = pose.fx + pose.fw * torch.sin(a_l), pose.fx + pose.fw * torch.sin(a_r)
        fore_l = (torch.cos(a_l) / torch.cos(theta)).clamp(min=0)
        fore_r = (torch.cos(a_r) / torch.cos(theta)).clamp(min=0)
        mid = (x_l + x_r) / 2
        return cls(y, _per_row(t["eye_size"]), x_l, x_r, fore_l, fore_r, mid,
                   _side(Xf, mid, x_l, x_r), _side(Xf, mid, fore_l, fore_r))


# ----------------------------------------------------------------------------------------------- the parts
def _draw_body(cv: _Canvas, t: dict, nu: dict, pose: _Pose, style: HairStyle) -> None:
    """Shirt, the hair hanging behind the head (long, afro, bob styles, a bun) and the neck."""
    X, Y, Yb, px = cv.X, cv.Y, cv.Yb, cv.px
    fx, fy, fw, fh, hx = pose.fx, pose.fy, pose.fw, pose.fh, pose.hx
    hair, skin = _colour(t["hair_color"]), _colour(t["skin_color"])
    shirt = _ellipse(X - fx * BODY.follow, Yb - (fy + fh + BODY.drop), BODY.half_width, BODY.half_height, px)
    cv.paint(_colour(nu["shirt_color"]), shirt, rows=cv.rb)
    back = style.back_hair * _ellipse(X - hx, Y - (fy + style.back_drop * fh),
                                      style.back_width * fw * _per_row(t["hair_volume"]), style.back_height * fh, px)
    bun = style.bun * _ellipse(X - hx, Y - (fy - BODY.bun_y * fh), BODY.bun_width, BODY.bun_height, px)
    cv.paint(hair * BODY.back_hair_shade, torch.maximum(back, bun))
    neck = _ellipse(X - fx, Yb - (fy + fh * BODY.neck_y), fw * BODY.neck_width, BODY.neck_height, px)
    cv.paint(skin * BODY.neck_shade, neck, rows=cv.rb)


def _draw_ears(cv: _Canvas, t: dict, pose: _Pose) -> None:
    """Ears behind the face (and earrings): the ear on the side the head turns to slides behind the head,
    the other one shows more of itself."""
    Xf, Yf, px = cv.Xf, cv.Yf, cv.px
    fx, fw, fh, sy = pose.fx, pose.fw, pose.fh, pose.sin_yaw
    size = _per_row(t["ear_size"])
    turn_r, turn_l = sy.clamp(min=0), (-sy).clamp(min=0)
    x_l, x_r = fx - fw * (1 - EARS.tuck * turn_l), fx + fw * (1 - EARS.tuck * turn_r)
    width = EARS.width * size
    rx = _side(Xf, fx, width * (1 + EARS.widen * turn_r), width * (1 + EARS.widen * turn_l))
    x = _side(Xf, fx, x_l, x_r)
    y = pose.fy + _per_row(t["eye_height"]) * fh + EARS.drop + EARS.pitch_shift * pose.sin_pitch * fh
    cv.paint(_colour(t["skin_color"]) * EARS.shade, _ellipse(Xf - x, Yf - y, rx, EARS.height * size, px), cv.rf, cv.cf)
    ring = _ellipse(Xf - x, Yf - (y + EARS.height * size + EARS.ring_gap), EARS.ring_radius, EARS.ring_radius, px)
    cv.paint(_fixed_colour(EARS.ring_colour, len(size), size.device), _per_row(t["earrings"]) * ring, cv.rf, cv.cf)


def _draw_face(cv: _Canvas, t: dict, pose: _Pose) -> torch.Tensor:
    """The face: a superellipse whose lower half narrows with the jaw. Returns its coverage (N, S, S)."""
    X, Y = cv.X, cv.Y
    fx, fy, fw, fh = pose.fx, pose.fy, pose.fw, pose.fh
    taper = fw * (1 - _per_row(t["jaw"]) * ((Y - fy) / fh).clamp(0, 1).square())
    p = 2 + 1.5 * _per_row(t["face_squareness"])  # 2: an ellipse, 3.5: almost a rounded box
    q = (((X - fx) / taper).abs().pow(p) + ((Y - fy) / fh).abs().pow(p)).pow(1 / p)
    face = _smooth((q - 1) * (torch.minimum(fw, fh) * cv.px))
    cv.paint(_colour(t["skin_color"]), face)
    return face


def _draw_eyes(cv: _Canvas, t: dict, nu: dict, pose: _Pose, eyes: _EyeLine) -> None:
    """Outline, white, iris and pupil; blinking and smiling close the eyes."""
    Xf, Yf, px = cv.Xf, cv.Yf, cv.px
    es, fore = eyes.size, eyes.fore
    opening = (1 - _per_row(nu["blink"])) * (1 - EYES.smile_squint * _per_row(nu["smile"]))
    rx, ry = EYES.width * es * fore, EYES.height * es * opening
    dark = _fixed_colour(EYES.outline_colour, len(es), es.device)
    line = EYES.outline / px
    cv.paint_feature(dark, _ellipse(Xf - eyes.x, Yf - eyes.y, rx + line * fore, ry + line, px))
    white = _ellipse(Xf - eyes.x, Yf - eyes.y, rx, ry, px)
    cv.paint_feature(torch.ones_like(dark) * EYES.white, white)
    ix = eyes.x + EYES.iris_shift * pose.sin_yaw
    iris = _ellipse(Xf - ix, Yf - eyes.y, EYES.iris_radius * es * fore, EYES.iris_radius * es, px)
    cv.paint_feature(_colour(t["iris_color"]), iris * white)
    pupil = _ellipse(Xf - ix, Yf - eyes.y, EYES.pupil_radius * es * fore, EYES.pupil_radius * es, px)
    cv.paint_feature(dark * EYES.pupil_shade, pupil * white)


def _draw_brows(cv: _Canvas, t: dict, nu: dict, pose: _Pose, eyes: _EyeLine) -> None:
    """Brows: tilted by the identity's brow angle (a shear), raised by the expression."""
    Xf, Yf = cv.Xf, cv.Yf
    y = eyes.y - BROWS.lift * eyes.size - BROWS.gap - BROWS.raised * _per_row(nu["brow_raise"])
    sign = _side(Xf, eyes.mid, -torch.ones_like(pose.fw), torch.ones_like(pose.fw))  # mirrored tilt
    u = (Xf - eyes.x) / (BROWS.half_length * eyes.fore + 1e-3)  # -1..1 along each brow
    brow_y = (Yf - y + sign * torch.tan(_per_row(t["brow_angle"])) * (Xf - eyes.x)
              + BROWS.arch * (1 - u.square()).clamp(min=0))
    brow = _ellipse(Xf - eyes.x, brow_y, BROWS.half_length * eyes.fore, _per_row(t["brow_thickness"]), cv.px)
    cv.paint_feature(_colour(t["brow_color"]), brow)


def _draw_marks(cv: _Canvas, t: dict, pose: _Pose, eyes: _EyeLine, face: torch.Tensor) -> None:
    """Freckles on the cheeks and a mole on the face's sphere, both only where the face is."""
    Xf, Yf, px = cv.Xf, cv.Yf, cv.px
    skin = _colour(t["skin_color"])
    cheek = _ellipse(Xf - eyes.x, Yf - (eyes.y + MARKS.cheek_drop), MARKS.cheek_width * eyes.fore,
                     MARKS.cheek_height, px)
    dots = (torch.sin(Xf * MARKS.dot_frequency + MARKS.dot_phase_x) * torch.sin(Yf * MARKS.dot_frequency
            + MARKS.dot_phase_y) - MARKS.dot_threshold).clamp(0, 1) * MARKS.dot_gain
    cv.paint_feature(skin * MARKS.freckle_shade, _per_row(t["freckles"]) * cheek * dots.clamp(max=1) * face)
    angle = _per_row(t["mole_angle"]) + pose.yaw
    mole_y = pose.fy + _per_row(t["mole_height"]) * pose.fh + MARKS.mole_pitch_shift * pose.sin_pitch * pose.fh
    mole = _ellipse(Xf - (pose.fx + pose.fw * torch.sin(angle)), Yf - mole_y,
                    MARKS.mole_radius * torch.cos(angle).clamp(min=0), MARKS.mole_radius, px)
    cv.paint_feature(skin * MARKS.mole_shade, _per_row(t["mole"]) * mole * face)


def _draw_nose(cv: _Canvas, t: dict, pose: _Pose, eyes: _EyeLine) -> tuple[torch.Tensor, torch.Tensor]:
    """The nose and its nostrils. Returns the nose's centre height and length, where the mouth hangs from."""
    Xf, Yf, px = cv.Xf, cv.Yf, cv.px
    skin = _colour(t["skin_color"])
    length, width = _per_row(t["nose_length"]), _per_row(t["nose_width"])
    x, y = pose.fx + (pose.fw + NOSE.reach) * pose.sin_yaw, eyes.y + NOSE.drop + length * NOSE.drop_per_length
    facing = NOSE.turned_width + NOSE.facing_width * pose.cos_yaw
    cv.paint_feature(skin * NOSE.shade, _ellipse(Xf - x, Yf - y, width * facing, length * NOSE.half_length, px))
    nostrils = _ellipse(Xf - x, Yf - (y + length * NOSE.nostril_drop), width * NOSE.nostril_width * facing,
                        NOSE.nostril_height, px)
    cv.paint_feature(skin * NOSE.nostril_shade, nostrils)
    return y, length


def _draw_mouth(cv: _Canvas, t: dict, nu: dict, pose: _Pose, nose_y, nose_length, face: torch.Tensor) -> None:
    """Beard, moustache, lips and the inside of the mouth; smiling bends and widens it, talking opens it."""
    Xf, Yf, px = cv.Xf, cv.Yf, cv.px
    hair, smile, opened = _colour(t["hair_color"]), _per_row(nu["smile"]), _per_row(nu["mouth_open"])
    x = pose.fx + pose.fw * MOUTH.yaw_reach * pose.sin_yaw
    y = nose_y + nose_length * NOSE.half_length + MOUTH.drop
    width = (_per_row(t["mouth_width"]) * (MOUTH.turned_width + MOUTH.facing_width * pose.cos_yaw)
             * (1 + MOUTH.smile_widen * smile))
    u2 = ((Xf - x) / width).square()  # 0 at the centre, 1 at the corners
    curve = MOUTH.smile_curve * smile - MOUTH.rest_curve
    beard = _per_row(t["beard"]) * _smooth((y + MOUTH.beard_drop - MOUTH.beard_curve * ((Xf - x) / pose.fw).square()
                                            - Yf) * px) * face
    cv.paint_feature(hair * MOUTH.hair_shade, beard)
    moustache = _ellipse(Xf - x, Yf - (y - MOUTH.moustache_lift - MOUTH.moustache_lift * opened)
                         - MOUTH.moustache_curve * u2, width * MOUTH.moustache_width, MOUTH.moustache_height, px)
    cv.paint_feature(hair * MOUTH.hair_shade, _per_row(t["moustache"]) * moustache)
    lips = _ellipse(Xf - x, Yf - y + curve * u2, width, MOUTH.lip_height + MOUTH.open_height * opened, px)
    cv.paint_feature(_colour(t["lip_color"]), lips)
    inside = _ellipse(Xf - x, Yf - y + curve * u2, width * MOUTH.inside_width,
                      MOUTH.inside_height * opened + MOUTH.inside_rest, px) * lips
    cv.paint_feature(_fixed_colour(MOUTH.inside_colour, len(smile), smile.device), inside)


def _draw_hair_cap(cv: _Canvas, t: dict, pose: _Pose, style: HairStyle, face: torch.Tensor) -> None:
    """Hair cap: an ellipse over the head, cut away below the hairline where it would cover the face."""
    X, Y, px = cv.X, cv.Y, cv.px
    fy, fh, hx, sp = pose.fy, pose.fh, pose.hx, pose.sin_pitch
    volume = style.cap_volume * _per_row(t["hair_volume"])
    y = fy - CAP.rise * fh - CAP.pitch_shift * sp * fh
    cap = _ellipse(X - hx, Y - y, pose.fw * CAP.width * volume, fh * CAP.height * volume, px)
    hairline = (fy - style.hairline * fh - CAP.pitch_shift * sp * fh + style.part_slope * (X - hx)
                + style.zigzag * torch.sin((X - hx) * CAP.spike_frequency).abs())
    below = _smooth((hairline - Y) * px)
    cv.paint(_colour(t["hair_color"]), style.cap * cap * (1 - face * below))


def _draw_glasses(cv: _Canvas, t: dict, eyes: _EyeLine, face: torch.Tensor) -> None:
    """Glasses: two rims and a bridge, on top of everything."""
    Xf, Yf, px = cv.Xf, cv.Yf, cv.px
    lens_rx = GLASSES.lens_width * eyes.size.clamp(max=GLASSES.max_eye_size)
    lens = _ellipse(Xf - eyes.x, Yf - eyes.y, lens_rx * eyes.fore, GLASSES.lens_height, px)
    rim = _ellipse(Xf - eyes.x, Yf - eyes.y, lens_rx * eyes.fore + GLASSES.rim / px,
                   GLASSES.lens_height + GLASSES.rim / px, px) - lens
    gap = (eyes.x_right - eyes.x_left).abs() / 2 - lens_rx * (eyes.fore_left + eyes.fore_right) / 2
    bridge = (_smooth((Yf - eyes.y + GLASSES.bridge_lift).abs() * px - GLASSES.bridge_thickness)
              * _smooth(((Xf - eyes.mid).abs() - gap - GLASSES.bridge_overlap) * px))
    cv.paint_feature(_colour(t["glasses_color"]), _per_row(t["glasses"]) * torch.maximum(rim, bridge) * face)


def _light(cv: _Canvas, nu: dict, pose: _Pose) -> None:
    """A linear shading ramp across the character in the light's direction."""
    angle, strength = _per_row(nu["light_angle"]), _per_row(nu["light_strength"])
    ramp = torch.cos(angle) * (cv.X - pose.fx) / pose.fw + torch.sin(angle) * (cv.Y - pose.fy) / pose.fh
    shade = _per_row(nu["brightness"]) + strength * ramp * LIGHT.ramp
    cv.layers[:, :3].mul_(shade.clamp(LIGHT.darkest, LIGHT.brightest).unsqueeze(1)).clamp_(0, 1)


def character_layers(t: dict, nu: dict, S: int) -> torch.Tensor:
    """One character per row in a canonical camera: (N, 5, S, S) = premultiplied RGB, alpha, face mask."""
    N = t["face_width"].shape[0]
    cv = _Canvas.empty(N, S, t["face_width"].device)
    pose = _Pose.of(t, nu)
    table = torch.tensor([list(s) for s in HAIR_STYLE_SHAPES.values()])  # hair_style indexes its rows
    style = HairStyle(*(_per_row(c) for c in table.to(cv.X.device)[t["hair_style"]].unbind(1)))
    _draw_body(cv, t, nu, pose, style)
    _draw_ears(cv, t, pose)
    face = _draw_face(cv, t, pose)
    face_band = face[:, cv.rf, cv.cf]
    eyes = _EyeLine.of(t, pose, cv.Xf)
    _draw_eyes(cv, t, nu, pose, eyes)
    _draw_brows(cv, t, nu, pose, eyes)
    _draw_marks(cv, t, pose, eyes, face_band)
    nose_y, nose_length = _draw_nose(cv, t, pose, eyes)
    _draw_mouth(cv, t, nu, pose, nose_y, nose_length, face_band)
    _draw_hair_cap(cv, t, pose, style, face)
    _draw_glasses(cv, t, eyes, face_band)
    _light(cv, nu, pose)
    cv.layers[:, 4] = face
    return cv.layers


# ----------------------------------------------------------------------------------------------- the picture
def background(nu: dict, H: int, W: int) -> torch.Tensor:
    """Backgrounds (N, 3, H, W) in [0, 1]: a two-colour gradient plus a soft circle and a box."""
    N = nu["bg_color"].shape[0]
    dev = nu["bg_color"].device
    x = ((torch.arange(W, device=dev) + 0.5) / W * 2 - 1).view(1, 1, W)
    y = ((torch.arange(H, device=dev) + 0.5) / H * 2 - 1).view(1, H, 1)
    angle = _per_row(nu["bg_angle"])
    g = (torch.cos(angle) * x + torch.sin(angle) * y) * 0.5 + 0.5
    c1, c2 = _colour(nu["bg_color"]), _colour(nu["bg_color2"])
    img = torch.addcmul(c1, c2 - c1, g.unsqueeze(1))
    s = nu["bg_shapes"]  # circle x, y, box x, y, circle radius, box half-size
    px = min(H, W) / 2
    circle = _ellipse(x - _per_row(s[:, 0]), y - _per_row(s[:, 1]), _per_row(s[:, 4]), _per_row(s[:, 4]), px)
    img.lerp_(nu["bg_shape_color"][:, 0].view(N, 3, 1, 1).expand(N, 3, H, W),
              (circle * BACKDROP.shape_opacity).unsqueeze(1))
    box_distance = torch.maximum((x - _per_row(s[:, 2])).abs() - _per_row(s[:, 5]),
                                 (y - _per_row(s[:, 3])).abs() - _per_row(s[:, 5]))
    box = _smooth(box_distance * px) * BACKDROP.shape_opacity
    img.lerp_(nu["bg_shape_color"][:, 1].view(N, 3, 1, 1).expand(N, 3, H, W), box.unsqueeze(1))
    return img * _per_row(nu["brightness"]).unsqueeze(1).clamp(BACKDROP.darkest, BACKDROP.brightest)


def place(layers: torch.Tensor, theta: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Warp canonical layers (N, K, S, S) into the camera with affine ``theta`` (N, 2, 3) -> (N, K, H, W)."""
    grid = F.affine_grid(theta, [layers.shape[0], layers.shape[1], H, W], align_corners=False)
    S = layers.shape[-1]
    # Clamping the vertical source coordinate lets the body continue below the canonical frame.
    grid = torch.stack([grid[..., 0], grid[..., 1].clamp(-1 + 1 / S, 1 - 1 / S)], -1)
    return F.grid_sample(layers, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def camera_theta(nu: dict, scale=1.0) -> torch.Tensor:
    """Affine map from output to canonical coordinates for zoom, roll and shift (and scene placement)."""
    z = nu["zoom"].float() * scale
    r = nu["roll"].float()
    sx, sy = nu["shift_x"].float(), nu["shift_y"].float()
    cos, sin = torch.cos(r) / z, torch.sin(r) / z
    row0 = torch.stack([cos, -sin, -(cos * sx - sin * sy)], -1)
    row1 = torch.stack([sin, cos, -(sin * sx + cos * sy)], -1)
    return torch.stack([row0, row1], 1)


def check_size(size) -> None:
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an int >= 16 (pixels per side), got {size!r}")


def render(traits: dict, nuisances: dict, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Render one face per row of ``traits``/``nuisances`` (dicts of length N).

    Returns images (N, 3, size, size) in [-1, 1] and face masks (N, size, size) in [0, 1].
    """
    check_size(size)
    n = traits["face_width"].shape[0]
    for name, d in (("traits", traits), ("nuisances", nuisances)):
        for k, v in d.items():
            if v.shape[0] != n:
                raise ValueError(f"{name}[{k!r}] has batch {tuple(v.shape)}, expected ({n}, ...) like face_width")
    layers = character_layers(traits, nuisances, size)
    out = place(layers, camera_theta(nuisances), size, size)
    img = background(nuisances, size, size) * (1 - out[:, 3:4]) + out[:, :3]
    return img.clamp(0, 1) * 2 - 1, out[:, 4]
