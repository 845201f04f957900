"""Finding faces in pictures (notebook 03): facenet-pytorch's MTCNN, whose weights ship inside its wheel.

:func:`detect_faces` gives boxes, probabilities, 160x160 crops (cut out and resized, not aligned) and masks
built from the boxes (:func:`box_to_mask`). It reads images in every form a learner has at hand
(:func:`_to_uint8_images`): NumPy arrays, PIL images, torch tensors, lists of them.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

from labkit.common import to_uint8

MTCNN_MIN_SIDE = 20  # MTCNN's default min_face_size: smaller images give it no pyramid level to search


def box_to_mask(box, height: int, width: int) -> torch.Tensor:
    """Mask of the pixels whose centres lie inside ``box`` = (x1, y1, x2, y2) in pixel units.

    Pixel (row i, column j) has its centre at (j + 0.5, i + 0.5); it is in the box when
    x1 <= j + 0.5 < x2 and y1 <= i + 0.5 < y2. ``box`` (4,) gives (height, width); boxes (N, 4) give
    (N, height, width). Parts of the box outside the image are simply cut off.
    """
    if not all(isinstance(n, numbers.Integral) and n >= 0 for n in (height, width)):
        raise ValueError(f"height and width must be ints >= 0, got height={height!r}, width={width!r}")
    height, width = int(height), int(width)
    box = torch.as_tensor(box, dtype=torch.float32)
    if box.shape[-1:] != (4,) or box.ndim > 2:
        raise ValueError(f"expected a box (4,) or boxes (N, 4) as x1, y1, x2, y2; got shape {tuple(box.shape)}")
    b = box.reshape(-1, 4)
    xs = torch.arange(width, dtype=torch.float32) + 0.5
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    in_x = (xs >= b[:, 0:1]) & (xs < b[:, 2:3])  # (N, W)
    in_y = (ys >= b[:, 1:2]) & (ys < b[:, 3:4])  # (N, H)
    mask = (in_y.unsqueeze(2) & in_x.unsqueeze(1)).float()
    return mask[0] if box.ndim == 1 else mask



@dataclass
class FaceDetections:
    """Faces found in a batch of images. N faces in all:

    boxes (N, 4) x1, y1, x2, y2 in pixels; probs (N,); crops (N, 3, 160, 160) in [-1, 1], the box (with
    MTCNN's margin) cut out and resized to the size InceptionResnetV1 expects, not aligned (no rotation to
    level the eyes); masks (N, H, W) from the boxes; image_index (N,) which image each face is
    in; messages: one line per image without a face (empty when every image had one).
    """

    boxes: torch.Tensor
    probs: torch.Tensor
    crops: torch.Tensor
    masks: torch.Tensor
    image_index: torch.Tensor
    messages: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def message(self) -> str:
        return "; ".join(self.messages) if self.messages else f"found {len(self)} face(s)"


#: Float NumPy images are read as [0, 1] (matplotlib's imread of a PNG, skimage), torch tensors as [-1, 1] (the
#: kit's convention); values may overshoot the range by this much (resampling) before an image is refused.
RANGE_TOLERANCE = 0.02
#: Most pixels one call takes, all images together (twice Pillow's decompression-bomb warning level, i.e. its
#: error level): a bigger input is refused from its shape, before any memory is used for it.
MAX_PIXELS = 178_956_970
_ACCEPTED = ("uint8 arrays (H, W), (H, W, C) or (B, H, W, C) with C = 1, 3 or 4, float arrays of those shapes in "
             "[0, 1], PIL images, torch tensors (3, H, W) or (B, 3, H, W) in [-1, 1], or a list of these")


def _to_uint8_images(images, name: str = "images") -> list[np.ndarray]:
    """Images as a list of uint8 arrays (H, W, 3), from any of the common forms a learner has at hand.

    * NumPy arrays (H, W) greyscale, (H, W, C) or (B, H, W, C) with C = 1 (grey), 3 (RGB) or 4 (RGBA: the
      alpha channel is dropped). uint8 (or any integer type) is read as 0..255; **float is read as [0, 1]**,
      the matplotlib/skimage convention (``plt.imread`` of a PNG, ``skimage.color.rgb2gray``);
    * torch tensors (3, H, W) or (B, 3, H, W): **float is read as [-1, 1]**, the kit's convention; uint8 0..255;
    * PIL images, any mode; a list or tuple of any of these (images of different sizes are fine).

    A float image outside its range (beyond ``RANGE_TOLERANCE``), NaN or infinite values, and anything else
    (channels-first arrays, bool, strings...) raise a one-line ValueError/TypeError naming ``name``, the shape
    and the dtype. More than ``MAX_PIXELS`` pixels in all are refused before any memory is used.
    """
    if isinstance(images, (list, tuple)):
        out = []
        for i, x in enumerate(images):
            if isinstance(x, (list, tuple)):
                raise TypeError(f"{name}[{i}] is a {type(x).__name__}: give images as {_ACCEPTED} (not nested lists)")
            out += _to_uint8_images(x, f"{name}[{i}]")
            if sum(a.shape[0] * a.shape[1] for a in out) > MAX_PIXELS:
                raise ValueError(f"{name} holds more than {MAX_PIXELS:,} pixels in all; pass fewer or smaller images")
        return out
    if isinstance(images, Image.Image):
        w, h = images.size
        if w * h > MAX_PIXELS:
            raise ValueError(f"{name} is a {w}x{h} PIL image: more than {MAX_PIXELS:,} pixels; make it smaller")
        if images.mode in ("I", "F") or images.mode.startswith("I;"):  # 32-bit int/float or 16-bit greyscale
            return _to_uint8_images(np.asarray(images), name)
        return [np.asarray(images.convert("RGB"))]
    if torch.is_tensor(images):
        return _tensor_to_uint8(images, name)
    if not isinstance(images, np.ndarray) and not hasattr(images, "__array__"):
        raise TypeError(f"{name} must be {_ACCEPTED}; got a {type(images).__name__}")
    arr = np.asarray(images)
    desc = f"{name} has shape {arr.shape} and dtype {arr.dtype}"
    if arr.dtype.kind not in "uif":
        raise TypeError(f"{desc}: expected {_ACCEPTED}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim not in (3, 4) or arr.shape[-1] not in (1, 3, 4):
        hint = ""
        if arr.ndim in (3, 4) and arr.shape[-3] in (1, 3, 4):
            hint = ("; channels-first arrays are not read: use arr.transpose(1, 2, 0) ((H, W, 3)) or a torch tensor "
                    "(3, H, W) in [-1, 1]")
        elif arr.ndim == 3:
            hint = "; a batch of greyscale images is (B, H, W, 1)"
        raise ValueError(f"{desc}: expected (H, W), (H, W, 3) (RGB), (H, W, 4) (RGBA) or (B, H, W, 3){hint}")
    batch = arr[None] if arr.ndim == 3 else arr
    _check_pixels(name, desc, batch.shape[0], batch.shape[1], batch.shape[2])
    if arr.size:
        if arr.dtype.kind == "f":
            if not np.isfinite(arr).all():
                raise ValueError(f"{desc} and contains NaN or infinite values")
            lo, hi = float(arr.min()), float(arr.max())
            if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
                raise ValueError(f"{desc} with values in [{lo:.3g}, {hi:.3g}]: float arrays are read as [0, 1] "
                                 "(matplotlib/skimage); for 0..255 use uint8 (arr.astype(np.uint8)), for [-1, 1] "
                                 "a torch tensor (3, H, W)")
        elif arr.dtype != np.uint8:
            lo, hi = int(arr.min()), int(arr.max())
            if lo < 0 or hi > 255:
                raise ValueError(f"{desc} with values in [{lo}, {hi}]: integer images are read as 0..255 "
                                 "(16-bit images: divide by 257 and use uint8)")
    out = []
    for im in batch:
        if im.dtype.kind == "f":
            im = np.clip(im.astype(np.float32) * 255 + 0.5, 0, 255)
        im = im.astype(np.uint8, copy=False)[:, :, :3]
        out.append(np.ascontiguousarray(np.repeat(im, 3, axis=2) if im.shape[2] == 1 else im))
    return out


def _check_pixels(name, desc, b, h, w) -> None:
    if b * h * w > MAX_PIXELS:
        raise ValueError(f"{desc}: {b} image(s) of {w}x{h} is more than {MAX_PIXELS:,} pixels in all; "
                         "pass fewer or smaller images")


def _tensor_to_uint8(images: torch.Tensor, name: str) -> list[np.ndarray]:
    """Tensors (3, H, W) / (B, 3, H, W), float in [-1, 1] or uint8 -> uint8 arrays (H, W, 3), one image at a time."""
    t = images.detach()
    desc = f"{name} has shape {tuple(t.shape)} and dtype {t.dtype}"
    if t.ndim not in (3, 4) or t.shape[-3] != 3:
        raise ValueError(f"{desc}: expected image tensors (3, H, W) or (B, 3, H, W) in [-1, 1]")
    if not (t.is_floating_point() or t.dtype == torch.uint8):
        raise TypeError(f"{desc}: expected a float tensor in [-1, 1] (or uint8 0..255)")
    batch = t[None] if t.ndim == 3 else t
    _check_pixels(name, desc, batch.shape[0], batch.shape[2], batch.shape[3])
    if t.is_floating_point() and t.numel():
        if not torch.isfinite(t).all():
            raise ValueError(f"{desc} and contains NaN or infinite values")
        lo, hi = t.min().item(), t.max().item()
        if lo < -1 - RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            raise ValueError(f"{desc} with values in [{lo:.3g}, {hi:.3g}]: float tensors are read as [-1, 1] (the "
                             "kit's convention); for [0, 1] images use x * 2 - 1, for 0..255 x / 127.5 - 1")
    if t.dtype == torch.uint8:
        return [np.ascontiguousarray(im.movedim(0, -1).cpu().numpy()) for im in batch]
    return [to_uint8(im) for im in batch]


# facenet_pytorch is imported where a detector is built: it pulls in torchvision (about 2 s), and importing
# this module must stay cheap for labkit.faces and the modules that only use box_to_mask or the image readers.
@lru_cache(maxsize=2)
def _mtcnn(device: str):
    from facenet_pytorch import MTCNN

    return MTCNN(image_size=160, margin=0, keep_all=True, post_process=False, device=device)


def detect_faces(images, min_prob: float = 0.9, device=None) -> FaceDetections:
    """Find faces with MTCNN in one image or a batch (see :func:`_to_uint8_images` for what is accepted).

    Images are handled one at a time, so an image without a face never breaks the batch (MTCNN's own
    batched path fails on such mixed batches): it adds a line to ``messages`` instead. Float NumPy images
    are read as [0, 1] (``plt.imread`` of a PNG), float tensors as [-1, 1]; anything unreadable raises a
    one-line ValueError/TypeError.
    """
    from facenet_pytorch.models.utils.detect_face import extract_face

    if isinstance(min_prob, bool) or not isinstance(min_prob, numbers.Real) or not 0.0 <= min_prob <= 1.0:
        raise ValueError(f"min_prob must be a probability in [0, 1], got {min_prob!r}")
    arrays = _to_uint8_images(images)
    mtcnn = _mtcnn(str(device or "cpu"))
    boxes, probs, crops, masks, index, messages = [], [], [], [], [], []
    for i, arr in enumerate(arrays):
        if min(arr.shape[:2]) < MTCNN_MIN_SIDE:  # MTCNN's image pyramid would be empty and torch.cat fails
            messages.append(f"no face found in image {i} of {len(arrays)}: {arr.shape[1]}x{arr.shape[0]} pixels "
                            f"is too small for MTCNN (it needs at least {MTCNN_MIN_SIDE} pixels per side)")
            continue
        found, p = mtcnn.detect(Image.fromarray(arr))
        keep = [] if found is None else [k for k in range(len(found)) if p[k] is not None and p[k] >= min_prob]
        if not keep:
            messages.append(f"no face found in image {i} of {len(arrays)} ({arr.shape[1]}x{arr.shape[0]} pixels)")
            continue
        for k in keep:
            xyxy = np.asarray(found[k], dtype=np.float32)  # facenet can hand back object arrays with newer numpy
            box = torch.from_numpy(xyxy)
            crop = extract_face(Image.fromarray(arr), xyxy, image_size=160, margin=0)  # (3,160,160) 0..255
            boxes.append(box)
            probs.append(float(p[k]))
            crops.append(crop.float() / 127.5 - 1)
            masks.append(box_to_mask(box, arr.shape[0], arr.shape[1]))
            index.append(i)
    if messages:
        warnings.warn("; ".join(messages), stacklevel=2)
    same_size = len({a.shape[:2] for a in arrays}) == 1
    h, w = arrays[0].shape[:2] if arrays else (0, 0)
    return FaceDetections(
        boxes=torch.stack(boxes) if boxes else torch.zeros(0, 4),
        probs=torch.tensor(probs, dtype=torch.float32),
        crops=torch.stack(crops) if crops else torch.zeros(0, 3, 160, 160),
        masks=torch.stack(masks) if masks and same_size else (torch.zeros(0, h, w) if not masks else masks),
        image_index=torch.tensor(index, dtype=torch.long),
        messages=messages,
    )
