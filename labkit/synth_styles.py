"""The numbers that shape the synthetic faces of :mod:`labkit.synth_drawing`, one named field per number.

Hair styles are rows of a table (:data:`HAIR_STYLE_SHAPES`: the trait ``hair_style`` indexes it); every
other part of a character has one set of numbers for everybody (identity enters through the traits that
scale them). Lengths are in canonical units, the drawn image being 2 units wide, unless a field says it
scales with a trait; "pixels" are pixels of the drawn image, whatever its size.
"""

from __future__ import annotations

from typing import NamedTuple


class HairStyle(NamedTuple):
    """How one hair style is drawn. Flags are 1.0 (present) or 0.0 (absent)."""

    cap: float  # hair over the top of the head
    cap_volume: float  # size of that cap relative to the head
    hairline: float  # height of the hairline above the face centre (x face height)
    part_slope: float  # tilt of the hairline across the forehead: a side part
    zigzag: float  # height of the spikes along the hairline
    back_hair: float  # hair hanging behind the head
    back_width: float  # its half-width (x face width x hair volume)
    back_height: float  # its half-height (x face height)
    back_drop: float  # its centre below the face centre (x face height)
    bun: float  # a bun on top of the head


# Columns in HairStyle's order; b.w, b.h, b.y: back_width, back_height, back_drop.
HAIR_STYLE_SHAPES = {
    #                        cap    vol   line   part    zig   back    b.w    b.h    b.y    bun
    "bald":      HairStyle(    0,  1.00,   0.9,   0.0,  0.00,     0,   1.0,   1.0,   0.0,     0),
    "crop":      HairStyle(    1,  1.04,  0.62,   0.0,  0.00,     0,   1.0,   1.0,   0.0,     0),
    "long":      HairStyle(    1,  1.10,  0.50,   0.0,  0.00,     1,  1.30,  1.55,  0.55,     0),
    "afro":      HairStyle(    1,  1.32,  0.55,   0.0,  0.00,     1,  1.65,  1.35, -0.15,     0),
    "side part": HairStyle(    1,  1.10,  0.45,  0.35,  0.00,     0,   1.0,   1.0,   0.0,     0),
    "bun":       HairStyle(    1,  1.04,  0.62,   0.0,  0.00,     0,   1.0,   1.0,   0.0,     1),
    "bob":       HairStyle(    1,  1.14,  0.25,   0.0,  0.00,     1,  1.28,  1.05,  0.25,     0),
    "spiky":     HairStyle(    1,  1.14,  0.50,   0.0,  0.12,     0,   1.0,   1.0,   0.0,     0),
}
HAIR_STYLES = tuple(HAIR_STYLE_SHAPES)  # the trait hair_style is an index into this tuple


class Head(NamedTuple):
    """Where the head sits in the canonical camera, and the bands where its parts can appear."""

    narrowing: float = 0.06  # a turned face shows this much less of its width (x |sin yaw|)
    shift: float = 0.04  # the head's centre moves with the turn (x sin yaw)
    centre_y: float = -0.06  # the face centre sits a little above the image centre
    hair_lag: float = 0.22  # the hair mass shows the back of the head, so it moves against the turn (x fw)
    feature_rows: tuple = (-0.62, 0.7)  # the band (canonical y) where facial features can appear
    feature_cols: tuple = (-0.78, 0.78)  # ... and canonical x: features are drawn only there
    body_rows: tuple = (0.15, 1.0)  # the band where the neck and the shirt can appear


class Body(NamedTuple):
    """Shirt, neck, and the hair behind the head."""

    follow: float = 0.5  # the shoulders follow this share of the head's sideways shift
    drop: float = 0.78  # shirt centre below the chin
    half_width: float = 0.72
    half_height: float = 0.62
    neck_y: float = 0.95  # neck centre below the face centre (x face height)
    neck_width: float = 0.42  # neck half-width (x face width)
    neck_height: float = 0.25
    back_hair_shade: float = 0.9  # back hair is darker than the cap
    neck_shade: float = 0.85  # the neck is in the face's shadow
    bun_y: float = 1.12  # bun centre above the face centre (x face height)
    bun_width: float = 0.17
    bun_height: float = 0.15


class Ears(NamedTuple):
    """Ears and earrings."""

    width: float = 0.075  # half-width (x ear size)
    height: float = 0.11  # half-height (x ear size)
    tuck: float = 0.3  # the ear on the side the head turns to slides behind it (x turn)
    widen: float = 0.6  # the other ear shows more of itself (x turn)
    drop: float = 0.06  # ear centre below the eye line
    pitch_shift: float = 0.3  # nodding moves the ears (x sin pitch x face height)
    shade: float = 0.9
    ring_radius: float = 0.026  # an earring below each ear
    ring_gap: float = 0.015
    ring_colour: tuple = (0.95, 0.78, 0.2)


class Eyes(NamedTuple):
    """Eye openings, irises and pupils."""

    pitch_shift: float = 0.5  # nodding moves the features up or down (x sin pitch x face height)
    width: float = 0.085  # half-width of the eye opening (x eye size)
    height: float = 0.062  # half-height (x eye size)
    smile_squint: float = 0.3  # a full smile closes the eyes this much
    outline: float = 0.9  # dark outline around the opening, in pixels
    outline_colour: tuple = (0.12, 0.08, 0.08)
    white: float = 0.97
    iris_radius: float = 0.05  # (x eye size)
    iris_shift: float = 0.02  # the irises look towards the turn (x sin yaw)
    pupil_radius: float = 0.022  # (x eye size)
    pupil_shade: float = 0.3  # the pupil is the outline colour, darker


class Brows(NamedTuple):
    """Eyebrows; their thickness, angle and colour are traits."""

    lift: float = 0.085  # brow line above the eye centre (x eye size) ...
    gap: float = 0.035  # ... plus this
    raised: float = 0.05  # the expression raises them by up to this
    half_length: float = 0.1  # (x eye foreshortening)
    arch: float = 0.03  # bow of the brow in its middle


class Marks(NamedTuple):
    """Freckles and the mole."""

    cheek_drop: float = 0.13  # freckled cheek centre below the eye
    cheek_width: float = 0.1  # (x eye foreshortening)
    cheek_height: float = 0.06
    dot_frequency: float = 60.0  # freckles are the peaks of a product of two sines
    dot_phase_x: float = 1.0
    dot_phase_y: float = 2.0
    dot_threshold: float = 0.55
    dot_gain: float = 2.2
    freckle_shade: float = 0.62
    mole_pitch_shift: float = 0.5
    mole_radius: float = 0.022
    mole_shade: float = 0.35


class Nose(NamedTuple):
    """The nose and its nostrils; its length and width are traits."""

    reach: float = 0.1  # the tip sticks out this far beyond the face sphere, so it moves more with yaw
    drop: float = 0.06  # nose centre below the eyes, plus ...
    drop_per_length: float = 0.6  # ... this share of the nose length
    turned_width: float = 0.7  # seen from the side the nose is this share of its width, plus ...
    facing_width: float = 0.3  # ... this share x cos yaw
    half_length: float = 0.55  # (x nose length)
    shade: float = 0.8
    nostril_drop: float = 0.35  # nostrils below the nose centre (x nose length)
    nostril_width: float = 0.7  # (x nose width)
    nostril_height: float = 0.018
    nostril_shade: float = 0.55


class Mouth(NamedTuple):
    """Mouth, lips, beard and moustache; the mouth's width is a trait."""

    yaw_reach: float = 0.97  # the mouth moves with the turn almost as much as the face edge (x fw sin yaw)
    drop: float = 0.08  # mouth centre below the nose tip
    turned_width: float = 0.45  # seen from the side the mouth is this share of its width, plus ...
    facing_width: float = 0.55  # ... this share x cos yaw
    smile_widen: float = 0.2
    smile_curve: float = 0.055  # a smile bends the lips up by this at the corners ...
    rest_curve: float = 0.01  # ... from a slight frown at rest
    lip_height: float = 0.028
    open_height: float = 0.07  # an open mouth is this much taller
    inside_width: float = 0.8  # the dark inside of the mouth (x mouth width)
    inside_height: float = 0.06  # (x mouth open)
    inside_rest: float = 0.004  # a closed mouth still shows a line
    inside_colour: tuple = (0.3, 0.05, 0.08)
    beard_drop: float = 0.03  # the beard starts just below the mouth line ...
    beard_curve: float = 0.3  # ... and rises towards the cheeks
    moustache_lift: float = 0.035  # above the mouth, more when it opens
    moustache_curve: float = 0.03
    moustache_width: float = 1.05  # (x mouth width)
    moustache_height: float = 0.022
    hair_shade: float = 0.8  # beard and moustache are darker than the hair


class Cap(NamedTuple):
    """The hair over the top of the head (its hairline is the hair style's)."""

    rise: float = 0.38  # cap centre above the face centre (x face height)
    pitch_shift: float = 0.3  # (x sin pitch x face height)
    width: float = 1.1  # (x face width x cap volume)
    height: float = 0.82  # (x face height x cap volume)
    spike_frequency: float = 40.0


class Glasses(NamedTuple):
    """Rims and bridge of the glasses."""

    lens_width: float = 0.105  # (x eye size, at most max_eye_size)
    max_eye_size: float = 1.05
    lens_height: float = 0.085
    rim: float = 1.1  # rim thickness in pixels
    bridge_lift: float = 0.02  # the bridge sits this far above the eye centre
    bridge_thickness: float = 0.8  # pixels
    bridge_overlap: float = 0.01  # the bridge reaches this far into each rim


class Light(NamedTuple):
    """Shading across the character."""

    ramp: float = 0.5  # the shading ramp across the face (x light strength)
    darkest: float = 0.3
    brightest: float = 1.6


class Backdrop(NamedTuple):
    """The background's shapes and brightness."""

    shape_opacity: float = 0.7  # the circle and the box are see-through
    darkest: float = 0.7  # the brightness nuisance, clamped for the background
    brightest: float = 1.3


HEAD, BODY, EARS, EYES, BROWS, MARKS = Head(), Body(), Ears(), Eyes(), Brows(), Marks()
NOSE, MOUTH, CAP, GLASSES, LIGHT, BACKDROP = Nose(), Mouth(), Cap(), Glasses(), Light(), Backdrop()
