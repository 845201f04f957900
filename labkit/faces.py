"""Finding faces and turning them into identity embeddings (notebook 03).

* :func:`detect_faces`: facenet-pytorch's MTCNN (its weights ship inside the wheel) finds faces and gives
  boxes, probabilities, 160x160 crops (cut out and resized, not aligned) and masks built from the boxes
  (:func:`box_to_mask`).
* :class:`FaceRecognitionBackbone`: a frozen face recognizer that maps images (B, 3, H, W) in [-1, 1]
  of any size to unit-norm 512-d embeddings. ``weights="synthfaces"`` (default) is a small CNN trained
  on :mod:`labkit.synthfaces` identities (``python -m labkit.faces train``) and shipped in data/;
  ``"vggface2"`` is facenet's InceptionResnetV1 loaded by facenet's own code; or a path to a weights file.
* :func:`cosine_similarity_matrix`, :func:`verification_report` and :func:`identity_levels`: how well
  embeddings separate identities (ROC-AUC, EER, TAR at FAR=1e-3; the ceiling and floor cosine levels
  that every later similarity is read against).
"""

from __future__ import annotations

import math
import numbers
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

VGGFACE2_URL = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt"
SYNTHFACES_WEIGHTS = "recognizer_synthfaces.safetensors"
#: The same network trained without look-alike families or colour jitter: the baseline notebook 03 compares.
BASELINE_WEIGHTS = "recognizer_synthfaces_baseline.safetensors"
EMBED_DIM = 512
MTCNN_MIN_SIDE = 20
#: A picture whose face probability is below this is refused where a face is required (references). Measured
#: with the shipped recognizer: 0 of 1,200 real held-out renders fall below it (lowest 0.046, 0.5% below 0.5),
#: while flat colour, noise and colour blocks sit near 0. Scores use the probability itself, not this cut.
NOT_A_FACE_BELOW = 0.02  # MTCNN's default min_face_size: smaller images give it no pyramid level to search


# ----------------------------------------------------------------------------------------------- detection
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
    from PIL import Image

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
    from labkit.common import to_uint8

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
    from PIL import Image

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


# ----------------------------------------------------------------------------------------------- recognizers
class SynthFaceNet(nn.Module):
    """A small CNN recognizer for 32x32 faces: 5 strided conv stages -> 512-d embedding (not normalised).

    A second head on the same features, ``face_logit``, answers "is this a face at all?": trained on renders
    against what a generator produces when it fails (colour blocks, patch mosaics, mush, noise, flat colour,
    shuffled parts). A recognizer alone cannot say no: it maps every input to some embedding.
    """

    input_size = 32

    def __init__(self, width: int = 16):
        super().__init__()
        w = width

        def block(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.features = nn.Sequential(
            block(3, w, 1), block(w, 2 * w, 2), block(2 * w, 2 * w, 1), block(2 * w, 4 * w, 2),
            block(4 * w, 4 * w, 1), block(4 * w, 8 * w, 2), nn.Conv2d(8 * w, 64, 1),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(64 * 4 * 4, EMBED_DIM),
                                  nn.BatchNorm1d(EMBED_DIM))
        self.face_head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def embed_and_face_logit(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both heads from one pass over the features: (B, 512) embeddings, (B,) face logits."""
        h = self.features(x)
        return self.head(h), self.face_head(h).squeeze(-1)


def _read_state_dict(path: Path) -> dict:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to parse means the file is not usable weights
        lines = [s.strip() for s in str(e).splitlines() if s.strip()] or [""]  # one line, the telling one
        why = next((s for s in lines if s.startswith(("Unsupported", "Can only", "Trying to"))), lines[0])[:300]
        raise ValueError(f"could not read face-recognizer weights from {path}: {type(e).__name__}: {why}. "
                         "The file may be corrupt or truncated; re-create it (python -m labkit.faces train) "
                         "or supply a good copy.") from e
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise ValueError(f"{path} does not hold a state_dict of tensors")
    bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{path} is corrupt: {len(bad)} weight tensor(s) hold NaN or inf (first: {bad[0]})")
    return sd


def _metadata(path: Path) -> dict:
    """The safetensors metadata of a recognizer file ({} for other files or none)."""
    if path.suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except Exception:  # noqa: BLE001 - an unreadable file is reported by _read_state_dict
        return {}


def _stored_levels(path: Path) -> dict:
    """The score levels a recognizer file carries in its metadata ({} when it has none)."""
    import json

    meta = _metadata(path)
    return json.loads(meta["levels"]) if "levels" in meta else {}


def _vggface2_cached_file() -> Path:
    from facenet_pytorch.models.inception_resnet_v1 import get_torch_home

    return Path(get_torch_home()) / "checkpoints" / os.path.basename(VGGFACE2_URL)


def _unreachable(url: str, timeout: float) -> str | None:
    """None when ``url``'s host accepts a connection within ``timeout`` s, else why not.

    Runs in a thread joined with a timeout because DNS lookups ignore socket timeouts.
    """
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(url)
    outcome = {}

    def probe():
        try:
            socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout / 2).close()
            outcome["ok"] = True
        except OSError as e:
            outcome["error"] = e

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return None if outcome.get("ok") else str(outcome.get("error", f"no answer within {timeout:.0f} s"))


def _ensure_vggface2(timeout: float = 8.0) -> Path:
    """The cached vggface2 file, downloading it if possible; offline, a clear error within ``timeout`` s.

    Reachability is checked first, with a bounded wait; only then does the download (about 110 MB, with a
    progress bar) start, so that a slow but working connection is not mistaken for no connection.
    """
    cached = _vggface2_cached_file()
    if cached.exists():
        return cached
    from torch.hub import download_url_to_file

    advice = (f"Download {VGGFACE2_URL} elsewhere and put it at {cached} (facenet-pytorch's cache; set "
              "TORCH_HOME to move it), or pass "
              "FaceRecognitionBackbone(weights='/path/to/20180402-114759-vggface2.pt'). "
              "weights='synthfaces' works offline.")
    why = _unreachable(VGGFACE2_URL, timeout)
    if why is not None:
        raise RuntimeError(f"could not download the vggface2 weights for InceptionResnetV1 ({why}). This machine "
                           f"seems to be offline. {advice}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".partial")
    try:
        download_url_to_file(VGGFACE2_URL, str(tmp), progress=True)
    except Exception as e:  # noqa: BLE001 - reported with instructions
        raise RuntimeError(f"downloading the vggface2 weights failed ({e}). {advice}") from e
    tmp.replace(cached)
    return cached


class FaceRecognitionBackbone(nn.Module):
    """A frozen face recognizer: images (B, 3, H, W) in [-1, 1], any H and W -> (B, 512) unit-norm embeddings.

    weights: "synthfaces" (default: the small CNN in data/), "synthfaces-baseline" (the same network trained
    without hard negatives, for comparison), "vggface2" (facenet's InceptionResnetV1 with
    its vggface2 weights: cached, downloaded, or a clear error offline), or a path to a .safetensors/.pt
    state_dict of either network. It stays in eval mode and its parameters never need gradients, but
    gradients do flow back to the input images (for identity losses).
    """

    def __init__(self, weights: str | os.PathLike = "synthfaces", device=None):
        super().__init__()
        from facenet_pytorch import InceptionResnetV1

        self.weights_name = str(weights)
        if weights in ("synthfaces", "synthfaces-baseline"):
            from labkit.common import data_path

            path = Path(data_path(SYNTHFACES_WEIGHTS if weights == "synthfaces" else BASELINE_WEIGHTS))
            if not path.exists():
                flag = "" if weights == "synthfaces" else f" --no-hard-negatives --out {path}"
                raise FileNotFoundError(f"{path} is missing: train it with `python -m labkit.faces train{flag}`")
            net, sd = SynthFaceNet(int(_metadata(path).get("width", 16))), _read_state_dict(path)
        elif weights == "vggface2":
            path = _ensure_vggface2()
            try:
                net = InceptionResnetV1(pretrained="vggface2")  # facenet's own loading code
            except Exception as e:  # noqa: BLE001
                raise ValueError(f"facenet could not load {path}: {type(e).__name__}: {e}. The file may be "
                                 "corrupt: delete it and supply a good copy.") from e
            sd = None
        else:
            path = Path(weights)
            if not path.exists():
                raise FileNotFoundError(f"no weights file at {path}; use 'synthfaces', 'vggface2' or a path")
            sd = _read_state_dict(path)
            net = SynthFaceNet(int(_metadata(path).get("width", 16))) if any(k.startswith("features.") for k in sd) \
                else InceptionResnetV1()
        if sd is not None:
            sd = {k: v.float() for k, v in sd.items() if not k.startswith("logits.")}
            if isinstance(net, SynthFaceNet) and not any(k.startswith("face_head.") for k in sd):
                del net.face_head  # an older recognizer file without the face check: embeddings only
            try:
                net.load_state_dict(sd)
            except RuntimeError as e:
                raise ValueError(f"{path} does not match {type(net).__name__}: {' '.join(str(e).split())[:300]}") from e
        self._wrap(net, device)
        # identity_scores' ceiling and floor per frame size, stored in the file when it was trained.
        self.score_levels = _stored_levels(path) if sd is not None else {}

    def _wrap(self, net: nn.Module, device=None) -> None:
        self.net = net
        self.input_size = getattr(net, "input_size", 160)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()
        if device is not None:
            self.to(device)

    @classmethod
    def from_network(cls, net: nn.Module, name: str = "in training") -> FaceRecognitionBackbone:
        """Wrap a network that is already built (e.g. one just trained) as a frozen recognizer."""
        backbone = cls.__new__(cls)
        nn.Module.__init__(backbone)
        backbone.weights_name, backbone.score_levels = name, {}
        backbone._wrap(net)
        return backbone

    def train(self, mode: bool = True):
        """Always eval: the recognizer is a fixed measuring instrument (BatchNorm statistics stay put)."""
        return super().train(False)

    @property
    def has_face_check(self) -> bool:
        """True when the network can also say whether an image is a face (the synthfaces recognizer)."""
        return hasattr(self.net, "face_head")

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(images):
            raise TypeError(f"images must be a torch tensor (B, 3, H, W) in [-1, 1], got {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W) in [-1, 1], got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"images must be float in [-1, 1], got dtype {images.dtype} (shape {tuple(images.shape)}); "
                            "uint8 images become x / 127.5 - 1")
        if min(images.shape[-2:]) == 0 or images.shape[0] * images.shape[-2] * images.shape[-1] > MAX_PIXELS:
            raise ValueError(f"images of shape {tuple(images.shape)} have no pixels or more than {MAX_PIXELS:,}")
        s = self.input_size
        if images.shape[-2:] != (s, s):
            images = F.interpolate(images, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        return images.float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(self._resize(images)), dim=-1)

    def embed_with_face_probability(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-norm embeddings (B, 512) and the probability that each image is a face (B,), in one pass.

        Without a face check (facenet's InceptionResnetV1), the probability is 1 for every image.
        """
        x = self._resize(images)
        if not self.has_face_check:
            emb = self.net(x)
            return F.normalize(emb, dim=-1), emb.new_ones(len(emb))
        emb, logit = self.net.embed_and_face_logit(x)
        return F.normalize(emb, dim=-1), torch.sigmoid(logit)


@lru_cache(maxsize=4)
def load_recognizer(weights: str = "synthfaces", device: str = "cpu") -> FaceRecognitionBackbone:
    """A shared, cached :class:`FaceRecognitionBackbone` (load once per process)."""
    return FaceRecognitionBackbone(weights, device=device)


def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity of every row of a (N, D) with every row of b (M, D) -> (N, M)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected a (N, D) and b (M, D) with the same D, got {tuple(a.shape)} and {tuple(b.shape)}")
    a = a / a.norm(dim=1, keepdim=True).clamp_min(eps)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(eps)
    return a @ b.T


# ----------------------------------------------------------------------------------------------- measuring
@torch.no_grad()
def embed(backbone, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Embeddings of images (..., 3, H, W) -> (..., 512), in batches."""
    if not torch.is_tensor(images) or images.ndim < 3 or images.shape[-3] != 3:
        raise TypeError(f"images must be a torch tensor (..., 3, H, W) in [-1, 1], got {type(images).__name__} "
                        f"of shape {tuple(getattr(images, 'shape', ()))}")
    if images.numel() > 3 * MAX_PIXELS:
        raise ValueError(f"images of shape {tuple(images.shape)} hold more than {MAX_PIXELS:,} pixels: embed fewer")
    lead = images.shape[:-3]
    if images.numel() == 0:
        return images.new_zeros(*lead, EMBED_DIM, dtype=torch.float32).cpu()
    flat = images.reshape(-1, *images.shape[-3:])
    dev = next(backbone.parameters()).device
    out = torch.cat([backbone(flat[i:i + batch_size].to(dev)).float().cpu()
                     for i in range(0, len(flat), batch_size)])
    return out.view(*lead, -1)


@torch.no_grad()
def embed_with_face_probability(backbone, images: torch.Tensor, batch_size: int = 256):
    """Embeddings (..., 512) and face probabilities (...) of images (..., 3, H, W), in batches."""
    lead = images.shape[:-3]
    flat = images.reshape(-1, *images.shape[-3:])
    dev = next(backbone.parameters()).device
    parts = [backbone.embed_with_face_probability(flat[i:i + batch_size].to(dev))
             for i in range(0, len(flat), batch_size)]
    emb = torch.cat([e.float().cpu() for e, _ in parts])
    prob = torch.cat([p.float().cpu() for _, p in parts])
    return emb.view(*lead, -1), prob.view(lead)


def verification_metrics(genuine: np.ndarray, impostor: np.ndarray) -> dict:
    """ROC-AUC, EER and TAR at FAR=1e-3 from genuine (same identity) and impostor pair similarities."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.r_[np.ones(len(genuine)), np.zeros(len(impostor))]
    s = np.r_[genuine, impostor]
    fpr, tpr, _ = roc_curve(y, s)
    fnr = 1 - tpr
    i = np.nanargmin(np.abs(fnr - fpr))
    return {"roc_auc": float(roc_auc_score(y, s)), "eer": float((fpr[i] + fnr[i]) / 2),
            "tar_at_far_1e-3": float(np.interp(1e-3, fpr, tpr))}


def identity_levels(backbone, size: int = 64, num_identities: int = 48, num_frames: int = 8, seed: int = 0,
                    device=None) -> dict:
    """The ceiling and floor cosine levels of ``backbone`` on held-out synthfaces identities.

    ceiling: same identity, other nuisances (pose, expression, blink) within one shot; ceiling_cut: same
    identity across a cut (camera, background and lighting changed); floor: different identities (floor_cut:
    the same from clips with cuts). Returns a dict of floats (also the gaps ceiling - floor).
    """
    from labkit import synthfaces

    g = torch.Generator().manual_seed(seed)
    ids = synthfaces.test_ids(num_identities, offset=seed * 10_000)
    out = {}
    for cuts in (0, 1):
        clips = synthfaces.make_clips(ids, num_frames, size, num_refs=0, num_cuts=cuts, generator=g, device=device)
        e = embed(backbone, clips.frames)  # (M, F, D)
        sim = torch.einsum("mfd,ngd->mfng", e, e)
        same_id = torch.eye(num_identities, dtype=torch.bool).view(num_identities, 1, num_identities, 1)
        shot = clips.cuts.long().cumsum(1).cpu()
        same_shot = shot.view(num_identities, num_frames, 1, 1) == shot.view(1, 1, num_identities, num_frames)
        not_self = ~torch.eye(num_frames, dtype=torch.bool).view(1, num_frames, 1, num_frames)
        floor = sim[~same_id.expand_as(sim)].mean().item()
        if cuts == 0:
            out["ceiling"] = sim[(same_id & not_self).expand_as(sim)].mean().item()
            out["floor"] = floor
        else:
            out["ceiling_cut"] = sim[(same_id & ~same_shot).expand_as(sim)].mean().item()
            out["floor_cut"] = floor
    out["gap"], out["gap_cut"] = out["ceiling"] - out["floor"], out["ceiling_cut"] - out["floor_cut"]
    return out


def verification_report(backbone=None, size: int = 64, num_identities: int = 200, images_per_identity: int = 4,
                        seed: int = 0, device=None) -> dict:
    """Face verification on held-out synthfaces identities (random nuisances per image, so pairs cross
    shots): ROC-AUC, EER, TAR at FAR=1e-3, plus :func:`identity_levels`. ``backbone`` defaults to synthfaces."""
    from labkit import synthfaces

    backbone = backbone if backbone is not None else load_recognizer()
    g = torch.Generator().manual_seed(1000 + seed)
    ids = synthfaces.test_ids(num_identities, offset=seed * 10_000).repeat_interleave(images_per_identity)
    images, _ = synthfaces.render_faces(ids, size, g, device)
    e = embed(backbone, images)
    sim = (e @ e.T).numpy()
    same = (ids[:, None] == ids[None, :]).numpy()
    upper = np.triu(np.ones_like(same), 1).astype(bool)
    report = verification_metrics(sim[same & upper], sim[~same & upper])
    report.update(identity_levels(backbone, size=size, seed=seed, device=device))
    report.update({f"lookalike_{k}": v for k, v in lookalike_verification(backbone, size, num_identities,
                                                                          images_per_identity, seed).items()})
    report["size"] = size
    return report


def lookalike_verification(backbone, size: int = 64, num_identities: int = 200, images_per_identity: int = 4,
                           seed: int = 0) -> dict:
    """Verification where every impostor is a look-alike: genuine pairs are two pictures of one held-out person;
    impostor pairs are a picture of that person and one of another person wearing their colours, hair and
    accessories (``identity_traits(look_from=...)``). ROC-AUC, EER, TAR at FAR=1e-3."""
    from labkit import synthfaces

    g = torch.Generator().manual_seed(2000 + seed)
    ids = synthfaces.test_ids(num_identities, offset=20_000 + seed * 10_000)
    others = synthfaces.test_ids(num_identities, offset=40_000 + seed * 10_000)
    k = images_per_identity
    who = ids.repeat_interleave(k)
    person, _ = synthfaces.render(synthfaces.identity_traits(who), synthfaces.sample_nuisances(len(who), g), size)
    look, _ = synthfaces.render(synthfaces.identity_traits(others.repeat_interleave(k), look_from=who),
                                synthfaces.sample_nuisances(len(who), g), size)
    e_p = embed(backbone, person).view(num_identities, k, -1)
    e_l = embed(backbone, look).view(num_identities, k, -1)
    pairs = torch.triu_indices(k, k, 1)
    genuine = torch.einsum("nid,nid->ni", e_p[:, pairs[0]], e_p[:, pairs[1]]).flatten()
    impostor = torch.einsum("nid,njd->nij", e_p, e_l).flatten()
    return verification_metrics(genuine.numpy(), impostor.numpy())


# ----------------------------------------------------------------------------------------------- training
def _degrade(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Augment faces (B, 3, 64, 64) the way generated frames and references differ from clean renders:
    down-scaling to 32x32 (or less) and back, blur, noise and contrast changes -> (B, 3, 32, 32).
    No flips: left/right traits (mole, side part) carry identity."""
    B = x.shape[0]
    r = lambda *s: torch.rand(*s, generator=g)
    x = F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    low = int(12 + r(1).item() * 16)  # an even coarser image for part of the batch, upsampled again
    pick = (r(B) < 0.4).view(B, 1, 1, 1)
    coarse = F.interpolate(F.interpolate(x, size=(low, low), mode="bilinear", antialias=True), size=(32, 32),
                           mode="bilinear", align_corners=False)
    x = torch.where(pick, coarse, x)
    blur = torch.tensor([1.0, 2.0, 1.0]) / 4
    k = (blur[:, None] * blur[None, :]).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=3)
    x = torch.where((r(B) < 0.3).view(B, 1, 1, 1), blurred, x)
    x = x * (0.8 + 0.4 * r(B, 1, 1, 1)) + (r(B, 1, 1, 1) - 0.5) * 0.2
    x = x + torch.randn(x.shape, generator=g) * (r(B, 1, 1, 1) < 0.5) * r(B, 1, 1, 1) * 0.15
    return x.clamp(-1, 1)


def colour_jitter(x: torch.Tensor, g: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Random colour changes per image (B, 3, H, W) in [-1, 1]: hue rotation, saturation, greyscale,
    channel gains, brightness. Trained under them, a recognizer cannot get by on hair or skin colour alone."""
    B = x.shape[0]
    r = lambda *s: torch.rand(*s, generator=g)
    img = (x + 1) / 2
    # Hue rotation about the grey axis (Rodrigues' formula), up to +-strength*60 degrees.
    angle = (r(B) * 2 - 1) * strength * math.pi / 3
    c, s_ = torch.cos(angle), torch.sin(angle)
    k = 1 / 3
    eye, ones = torch.eye(3), torch.full((3, 3), k)
    cross = torch.tensor([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], dtype=torch.float32) * math.sqrt(k)
    rot = c.view(B, 1, 1) * eye + (1 - c).view(B, 1, 1) * ones + s_.view(B, 1, 1) * cross
    img = torch.einsum("bij,bjhw->bihw", rot, img)
    grey = img.mean(1, keepdim=True)
    sat = 1 + (r(B, 1, 1, 1) * 2 - 1) * 0.6 * strength
    sat = torch.where(r(B, 1, 1, 1) < 0.1 * strength, torch.zeros_like(sat), sat)  # sometimes greyscale
    img = grey + (img - grey) * sat
    img = img * (1 + (r(B, 3, 1, 1) * 2 - 1) * 0.15 * strength) * (1 + (r(B, 1, 1, 1) * 2 - 1) * 0.2 * strength)
    return (img.clamp(0, 1) * 2 - 1)


def not_faces(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Images that are not faces but keep a face's colours (B, 3, S, S) -> (B, 3, S, S): colour blocks,
    noisy patch mosaics, mush (a face blurred past recognition), flat colour, noise, shuffled patches.

    They are the negatives of the face check: what a generator that has not learned to draw a face gives,
    and what a colour-reading score would praise."""
    B, _, S, _ = x.shape
    r = lambda *s: torch.rand(*s, generator=g)
    kind = (r(B) * 6).long()
    out = torch.empty_like(x)
    for i in range(B):
        img = x[i:i + 1]
        k = int(kind[i])
        if k == 0:  # colour blocks: a 3x3 .. 10x10 grid
            n = int(3 + r(1).item() * 8)
            out[i] = F.interpolate(F.adaptive_avg_pool2d(img, n), size=(S, S), mode="nearest")[0]
        elif k == 1:  # a mosaic of 4x4-pixel patches with noise, as a half-trained patch model draws
            p = max(2, S // 8)
            m = F.interpolate(F.avg_pool2d(img, p), size=(S, S), mode="nearest")
            out[i] = (m + torch.randn(m.shape, generator=g) * (0.05 + 0.3 * r(1).item()))[0]
        elif k == 2:  # mush: blurred until only a blob of the colours is left
            n = int(2 + r(1).item() * 5)
            out[i] = F.interpolate(F.adaptive_avg_pool2d(img, n), size=(S, S), mode="bilinear",
                                   align_corners=False)[0]
        elif k == 3:  # flat colour, sometimes with a gradient
            c = img.mean((2, 3), keepdim=True)
            ramp = torch.linspace(-1, 1, S).view(1, 1, S, 1) * (r(1, 3, 1, 1) - 0.5)
            out[i] = (c + ramp).expand(1, 3, S, S)[0]
        elif k == 4:  # noise
            out[i] = (torch.randn(1, 3, S, S, generator=g) * (0.2 + 0.6 * r(1).item())
                      + img.mean((2, 3), keepdim=True))[0]
        else:  # the face's own patches, shuffled: every colour and edge is there, the layout is not
            p = S // 4
            tiles = img.unfold(2, p, p).unfold(3, p, p).reshape(1, 3, 16, p, p)
            tiles = tiles[:, :, torch.randperm(16, generator=g)]
            out[i] = tiles.reshape(1, 3, 4, 4, p, p).permute(0, 1, 2, 4, 3, 5).reshape(1, 3, S, S)[0]
    return out.clamp(-1, 1)


def corrupted_faces(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Faces (B, 3, S, S) corrupted past what a viewer still calls a clean picture of a face -> (B, 3, S, S):
    patch-seam mosaics (every 4x4 patch shifted in colour, plus pixel noise), heavy noise, and a face half
    dissolved into its own noisy mosaic. These are what a diffusion model of 4x4-pixel patches draws before it
    has learned faces: a face-shaped blob in the right colours that a face check trained only on clean renders
    calls a face. The mild degradations of :func:`_degrade` (noise up to 0.15, blur, downscaling) stay faces.
    """
    B, _, S, _ = x.shape
    r = lambda *s: torch.rand(*s, generator=g)
    p = max(2, S // 8)
    kind = (r(B) * 3).long().view(B, 1, 1, 1)
    seams = torch.randn(B, 3, S // p, S // p, generator=g) * (0.15 + 0.25 * r(B, 1, 1, 1))
    seams = F.interpolate(seams, size=(S, S), mode="nearest")
    patchy = x + seams + torch.randn(x.shape, generator=g) * (0.1 + 0.2 * r(B, 1, 1, 1))
    noisy = x + torch.randn(x.shape, generator=g) * (0.3 + 0.3 * r(B, 1, 1, 1))
    mosaic = F.interpolate(F.avg_pool2d(x, p), size=(S, S), mode="nearest")
    dissolved = 0.5 * x + 0.5 * (mosaic + torch.randn(x.shape, generator=g) * 0.3)
    out = torch.where(kind == 0, patchy, torch.where(kind == 1, noisy, dissolved))
    return out.clamp(-1, 1)


def train_face_check(weights=None, steps: int = 2000, batch_size: int = 128, lr: float = 1e-3, seed: int = 1,
                     out: str | None = None, num_identities: int = 1500) -> Path:
    """Retrain only the face-check head of a synthfaces recognizer, with :func:`corrupted_faces` added to the
    negatives. The features and the embedding head stay frozen, so every embedding, and every model
    conditioned on them, is unchanged; only P(face) gets stricter. Writes the recognizer file back (same
    metadata) to ``out`` (default: the file it read)."""
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    from labkit import synthfaces
    from labkit.common import data_path

    path = Path(weights) if weights else data_path(SYNTHFACES_WEIGHTS)
    meta = _metadata(path)
    net = SynthFaceNet(int(meta.get("width", 16)))
    net.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    g = torch.Generator().manual_seed(seed)
    ids = synthfaces.train_ids(num_identities, offset=500_000)  # not the recognizer's own training classes
    with torch.no_grad():
        pool = synthfaces.render_faces(ids.repeat_interleave(8), 64, g)[0]
    net.eval()  # BatchNorm statistics of the frozen features stay as they are
    for prm in net.parameters():
        prm.requires_grad_(False)
    for prm in net.face_head.parameters():
        prm.requires_grad_(True)
    opt = torch.optim.AdamW(net.face_head.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    for step in tqdm(range(steps), mininterval=30, desc="train face check"):
        idx = torch.randint(len(pool), (batch_size,), generator=g)
        faces = _degrade(colour_jitter(pool[idx], g, strength=0.5), g)
        half = batch_size // 2
        negatives = torch.cat([not_faces(faces[:half // 2], g), corrupted_faces(faces[half // 2: half], g)])
        _, logit = net.embed_and_face_logit(torch.cat([faces, negatives]))
        target = torch.cat([torch.ones(batch_size), torch.zeros(len(negatives))])
        loss = F.binary_cross_entropy_with_logits(logit, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 500 == 0:
            print(f"step {step + 1}/{steps} face check {loss.item():.3f}", flush=True)
    out = Path(out) if out else path
    save_file({k: v.half().contiguous() for k, v in net.state_dict().items()}, str(out),
              metadata={**meta, "face_check": "retrained with corrupted faces as negatives"})
    print(f"wrote {out}", flush=True)
    return out


class ArcFaceHead(nn.Module):
    """Additive angular margin (ArcFace): logits s*cos(theta + m) for the true class, s*cos(theta) otherwise."""

    def __init__(self, num_classes: int, dim: int = EMBED_DIM, scale: float = 24.0, margin: float = 0.3):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, dim) * 0.01)
        self.scale, self.margin = scale, margin

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = F.normalize(emb, dim=-1) @ F.normalize(self.weight, dim=-1).T
        theta = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
        target = torch.cos(theta + self.margin)
        onehot = F.one_hot(labels, cos.shape[1]).bool()
        return self.scale * torch.where(onehot, target, cos)


def lookalike_donors(num_classes: int, family_size: int = 6, share_in_families: float = 1.0) -> torch.Tensor:
    """For each training class, the id whose colours and hair it wears (``identity_traits(look_from=...)``).

    The first ``share_in_families`` of the classes come in families of ``family_size`` that share one donor's
    look and differ only in face geometry: hard negatives, so the recognizer must read the face. The rest
    wear their own look.
    """
    from labkit import synthfaces

    ids = synthfaces.train_ids(num_classes)
    in_families = int(num_classes * share_in_families) // family_size * family_size
    donors = ids.clone()
    donors[:in_families] = ids[:in_families].view(-1, family_size)[:, :1].expand(-1, family_size).reshape(-1)
    return donors


def train_recognizer(num_identities: int = 1500, images_per_identity: int = 12, steps: int = 3000,
                     batch_size: int = 128, lr: float = 3e-3, seed: int = 0, out: str | None = None,
                     log_every: int = 100, time_limit: float | None = None, hard_negatives: bool = True,
                     width: int = 16, margin: float = 0.45) -> Path:
    """Train :class:`SynthFaceNet` with an ArcFace loss on train identities and its face check; write fp16
    safetensors with the score levels (:func:`labkit.metrics.measure_levels`) in the metadata.

    Faces are rendered once into a pool (random nuisances: pose, expression, lighting, background, camera,
    clothes, i.e. everything a cut changes), three quarters of the classes in look-alike families
    (:func:`lookalike_donors`). At every step they are colour-jittered and degraded afresh, and half a batch
    of non-faces made from them (:func:`not_faces`) trains the face check. ``hard_negatives=False`` trains
    the same network without look-alike families and colour jitter (the comparison notebook 03 shows).
    """
    import json

    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from labkit import synthfaces
    from labkit.common import data_path, seed_everything

    seed_everything(seed)
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    ids = synthfaces.train_ids(num_identities)
    donors = lookalike_donors(num_identities, share_in_families=1.0 if hard_negatives else 0.0)
    pool = []
    with torch.no_grad():
        for i in range(0, num_identities, 64):
            chunk = ids[i:i + 64].repeat_interleave(images_per_identity)
            look = donors[i:i + 64].repeat_interleave(images_per_identity)
            traits = synthfaces.identity_traits(chunk, look_from=look)
            images, _ = synthfaces.render(traits, synthfaces.sample_nuisances(len(chunk), g), 64)
            pool.append(((images + 1) * 127.5).round().to(torch.uint8))
    pool = torch.cat(pool)
    labels = torch.arange(num_identities).repeat_interleave(images_per_identity)
    print(f"rendered {len(pool)} faces of {num_identities} identities in {time.time() - t0:.0f} s", flush=True)
    net, head = SynthFaceNet(width), ArcFaceHead(num_identities, margin=margin if hard_negatives else 0.3)
    opt = torch.optim.AdamW(list(net.parameters()) + list(head.parameters()), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    net.train()
    for step in tqdm(range(steps), mininterval=30, desc="train recognizer"):
        idx = torch.randint(len(pool), (batch_size,), generator=g)
        faces = pool[idx].float() / 127.5 - 1
        jitter = (torch.rand(batch_size, 1, 1, 1, generator=g) < (0.85 if hard_negatives else 0.0)).float()
        faces = jitter * colour_jitter(faces, g) + (1 - jitter) * faces
        x = _degrade(faces, g)
        negatives = not_faces(x[: batch_size // 2], g)
        emb, face_logit = net.embed_and_face_logit(torch.cat([x, negatives]))
        is_face = torch.cat([torch.ones(batch_size), torch.zeros(len(negatives))])
        arc = F.cross_entropy(head(emb[:batch_size], labels[idx]), labels[idx])
        check = F.binary_cross_entropy_with_logits(face_logit, is_face)
        loss = arc + check
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % log_every == 0:
            print(f"step {step + 1}/{steps} arcface {arc.item():.3f} face check {check.item():.3f} "
                  f"({time.time() - t0:.0f} s)", flush=True)
        if time_limit is not None and time.time() - t0 > time_limit:
            print(f"stopping at step {step + 1}: time limit {time_limit:.0f} s", flush=True)
            break
    path = Path(out) if out else data_path(SYNTHFACES_WEIGHTS)
    from labkit.metrics import measure_levels

    backbone = FaceRecognitionBackbone.from_network(net)
    levels = {str(size): measure_levels(backbone, size) for size in (32, 64)}
    save_file({k: v.half().contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"num_identities": str(num_identities), "steps": str(steps), "seed": str(seed),
                        "hard_negatives": str(hard_negatives), "width": str(width), "margin": str(margin),
                        "levels": json.dumps(levels)})
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) after {time.time() - t0:.0f} s; levels {levels}",
          flush=True)
    return path


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="python -m labkit.faces", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train the synthfaces recognizer and write data/" + SYNTHFACES_WEIGHTS)
    tr.add_argument("--identities", type=int, default=1500)
    tr.add_argument("--images-per-identity", type=int, default=12)
    tr.add_argument("--steps", type=int, default=3000)
    tr.add_argument("--batch-size", type=int, default=128)
    tr.add_argument("--lr", type=float, default=3e-3)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", default=None)
    tr.add_argument("--width", type=int, default=16, help="channels of the first stage (the network's width)")
    tr.add_argument("--margin", type=float, default=0.45, help="ArcFace angular margin for the hard-negative run")
    tr.add_argument("--no-hard-negatives", action="store_true",
                    help="no look-alike families and no colour jitter (the baseline that reads colours)")
    fc = sub.add_parser("train-face-check", help="retrain only the face-check head, with corrupted faces as "
                        "negatives (embeddings unchanged)")
    fc.add_argument("--weights", default=None, help="recognizer file (default: the shipped one)")
    fc.add_argument("--steps", type=int, default=2000)
    fc.add_argument("--out", default=None)
    b = sub.add_parser("bench", help="print verification figures on held-out identities")
    b.add_argument("--weights", default="synthfaces")
    b.add_argument("--identities", type=int, default=200)
    args = parser.parse_args(argv)
    if args.cmd == "train-face-check":
        train_face_check(args.weights, args.steps, out=args.out)
        return
    if args.cmd == "train":
        train_recognizer(args.identities, args.images_per_identity, args.steps, args.batch_size, args.lr,
                         args.seed, args.out, hard_negatives=not args.no_hard_negatives, width=args.width,
                         margin=args.margin)
        return
    backbone = FaceRecognitionBackbone(args.weights)
    for size in (64, 32):
        t0 = time.time()
        r = verification_report(backbone, size=size, num_identities=args.identities)
        print(f"{args.weights} recognizer, held-out identities, {size}x{size} ({time.time() - t0:.0f} s): "
              f"ROC-AUC {r['roc_auc']:.4f}  EER {100 * r['eer']:.2f}%  TAR@FAR=1e-3 {100 * r['tar_at_far_1e-3']:.1f}%")
        print(f"  no cut:     ceiling {r['ceiling']:.3f}  floor {r['floor']:.3f}  gap {r['gap']:.3f}")
        print(f"  across cut: ceiling {r['ceiling_cut']:.3f}  floor {r['floor_cut']:.3f}  gap {r['gap_cut']:.3f}")
        print(f"  look-alike impostors only: ROC-AUC {r['lookalike_roc_auc']:.4f}  "
              f"EER {100 * r['lookalike_eer']:.2f}%  TAR@FAR=1e-3 {100 * r['lookalike_tar_at_far_1e-3']:.1f}%")


if __name__ == "__main__":
    main()
