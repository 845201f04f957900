"""Finding faces and turning them into identity embeddings (notebook 03).

* :func:`detect_faces`: facenet-pytorch's MTCNN (its weights ship inside the wheel) finds faces and gives
  boxes, probabilities, aligned 160x160 crops and masks built from the boxes (:func:`box_to_mask`).
* :class:`FaceRecognitionBackbone`: a frozen face recognizer that maps images (B, 3, H, W) in [-1, 1]
  of any size to unit-norm 512-d embeddings. ``weights="synthfaces"`` (default) is a small CNN trained
  on :mod:`labkit.synthfaces` identities (``python -m labkit.faces train``) and shipped in data/;
  ``"vggface2"`` is facenet's InceptionResnetV1 loaded by facenet's own code; or a path to a weights file.
* :func:`cosine_similarity_matrix`, :func:`verification_report` and :func:`identity_levels`: how well
  embeddings separate identities (ROC-AUC, EER, TAR at FAR=1e-3; the ceiling and floor cosine levels
  that every later similarity is read against).
"""

from __future__ import annotations

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
EMBED_DIM = 512
MTCNN_MIN_SIDE = 20  # MTCNN's default min_face_size: smaller images give it no pyramid level to search


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

    boxes (N, 4) x1, y1, x2, y2 in pixels; probs (N,); crops (N, 3, 160, 160) in [-1, 1], aligned as
    InceptionResnetV1 expects; masks (N, H, W) from the boxes; image_index (N,) which image each face is
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


def _to_uint8_images(images) -> list[np.ndarray]:
    """Images as a list of uint8 arrays (H, W, 3). Accepts tensors (3,H,W)/(B,3,H,W) in [-1, 1],
    uint8 arrays (H,W,3)/(B,H,W,3), PIL images, or a list of any of these."""
    from PIL import Image

    if isinstance(images, (list, tuple)):
        return [im for x in images for im in _to_uint8_images(x)]
    if isinstance(images, Image.Image):
        return [np.asarray(images.convert("RGB"))]
    if torch.is_tensor(images):
        from labkit.common import to_uint8

        if images.ndim not in (3, 4) or images.shape[-3] != 3:
            raise ValueError(f"expected image tensors (3, H, W) or (B, 3, H, W) in [-1, 1], got {tuple(images.shape)}")
        arr = to_uint8(images)
        return list(arr) if arr.ndim == 4 else [arr]
    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or arr.shape[-1] != 3:
        raise ValueError(f"expected uint8 arrays (H, W, 3) or (B, H, W, 3), got {arr.dtype} {arr.shape}")
    return list(arr) if arr.ndim == 4 else [arr]


@lru_cache(maxsize=2)
def _mtcnn(device: str):
    from facenet_pytorch import MTCNN

    return MTCNN(image_size=160, margin=0, keep_all=True, post_process=False, device=device)


def detect_faces(images, min_prob: float = 0.9, device=None) -> FaceDetections:
    """Find faces with MTCNN in one image or a batch (see :func:`_to_uint8_images` for what is accepted).

    Images are handled one at a time, so an image without a face never breaks the batch (MTCNN's own
    batched path fails on such mixed batches): it adds a line to ``messages`` instead.
    """
    from facenet_pytorch.models.utils.detect_face import extract_face
    from PIL import Image

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
    """A small CNN recognizer for 32x32 faces: 5 strided conv stages -> 512-d embedding (not normalised)."""

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _read_state_dict(path: Path) -> dict:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to parse means the file is not usable weights
        raise ValueError(f"could not read face-recognizer weights from {path}: {type(e).__name__}: {e}. "
                         "The file may be corrupt or truncated; re-create it (python -m labkit.faces train) "
                         "or supply a good copy.") from e
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise ValueError(f"{path} does not hold a state_dict of tensors")
    return sd


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

    weights: "synthfaces" (default: the small CNN in data/), "vggface2" (facenet's InceptionResnetV1 with
    its vggface2 weights: cached, downloaded, or a clear error offline), or a path to a .safetensors/.pt
    state_dict of either network. It stays in eval mode and its parameters never need gradients, but
    gradients do flow back to the input images (for identity losses).
    """

    def __init__(self, weights: str | os.PathLike = "synthfaces", device=None):
        super().__init__()
        from facenet_pytorch import InceptionResnetV1

        self.weights_name = str(weights)
        if weights == "synthfaces":
            path = Path(__import__("labkit.common", fromlist=["data_path"]).data_path(SYNTHFACES_WEIGHTS))
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: train it with `python -m labkit.faces train`")
            net, sd = SynthFaceNet(), _read_state_dict(path)
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
            net = SynthFaceNet() if any(k.startswith("features.") for k in sd) else InceptionResnetV1()
        if sd is not None:
            sd = {k: v.float() for k, v in sd.items() if not k.startswith("logits.")}
            try:
                net.load_state_dict(sd)
            except RuntimeError as e:
                raise ValueError(f"{path} does not match {type(net).__name__}: {str(e)[:300]}") from e
        self.net = net
        self.input_size = getattr(net, "input_size", 160)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()
        if device is not None:
            self.to(device)

    def train(self, mode: bool = True):
        """Always eval: the recognizer is a fixed measuring instrument (BatchNorm statistics stay put)."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W) in [-1, 1], got shape {tuple(images.shape)}")
        s = self.input_size
        if images.shape[-2:] != (s, s):
            images = F.interpolate(images, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        return F.normalize(self.net(images.float()), dim=-1)


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
    lead = images.shape[:-3]
    flat = images.reshape(-1, *images.shape[-3:])
    dev = next(backbone.parameters()).device
    out = torch.cat([backbone(flat[i:i + batch_size].to(dev)).float().cpu()
                     for i in range(0, len(flat), batch_size)])
    return out.view(*lead, -1)


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
    report["size"] = size
    return report


# ----------------------------------------------------------------------------------------------- training
def _degrade(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Augment faces (B, 3, 64, 64) the way generated frames and references differ from clean renders:
    down-scaling to 32x32 (or less) and back, blur, noise and contrast changes -> (B, 3, 32, 32)."""
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
    flip = (r(B) < 0.0).view(B, 1, 1, 1)  # no flips: left/right traits (mole, side part) carry identity
    return torch.where(flip, x.flip(-1), x).clamp(-1, 1)


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


def train_recognizer(num_identities: int = 1000, images_per_identity: int = 12, steps: int = 1000,
                     batch_size: int = 128, lr: float = 3e-3, seed: int = 0, out: str | None = None,
                     log_every: int = 100, time_limit: float | None = None) -> Path:
    """Train :class:`SynthFaceNet` with an ArcFace loss on train identities; write fp16 safetensors.

    Faces are rendered once into a pool (random nuisances: pose, expression, lighting, background, camera,
    i.e. everything a cut changes) and degraded afresh at every step (see :func:`_degrade`).
    """
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from labkit import synthfaces
    from labkit.common import data_path, seed_everything

    seed_everything(seed)
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    ids = synthfaces.train_ids(num_identities)
    pool = []
    with torch.no_grad():
        for i in range(0, num_identities, 64):
            chunk = ids[i:i + 64].repeat_interleave(images_per_identity)
            pool.append(((synthfaces.render_faces(chunk, 64, g)[0] + 1) * 127.5).round().to(torch.uint8))
    pool = torch.cat(pool)
    labels = torch.arange(num_identities).repeat_interleave(images_per_identity)
    print(f"rendered {len(pool)} faces of {num_identities} identities in {time.time() - t0:.0f} s", flush=True)
    net, head = SynthFaceNet(), ArcFaceHead(num_identities)
    opt = torch.optim.AdamW(list(net.parameters()) + list(head.parameters()), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    net.train()
    for step in tqdm(range(steps), mininterval=30, desc="train recognizer"):
        idx = torch.randint(len(pool), (batch_size,), generator=g)
        x = _degrade(pool[idx].float() / 127.5 - 1, g)
        loss = F.cross_entropy(head(net(x), labels[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % log_every == 0:
            print(f"step {step + 1}/{steps} loss {loss.item():.3f} ({time.time() - t0:.0f} s)", flush=True)
        if time_limit is not None and time.time() - t0 > time_limit:
            print(f"stopping at step {step + 1}: time limit {time_limit:.0f} s", flush=True)
            break
    path = Path(out) if out else data_path(SYNTHFACES_WEIGHTS)
    save_file({k: v.half().contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"num_identities": str(num_identities), "steps": str(steps), "seed": str(seed)})
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) after {time.time() - t0:.0f} s", flush=True)
    return path


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="python -m labkit.faces", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train the synthfaces recognizer and write data/" + SYNTHFACES_WEIGHTS)
    tr.add_argument("--identities", type=int, default=1000)
    tr.add_argument("--images-per-identity", type=int, default=12)
    tr.add_argument("--steps", type=int, default=1000)
    tr.add_argument("--batch-size", type=int, default=128)
    tr.add_argument("--lr", type=float, default=3e-3)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", default=None)
    b = sub.add_parser("bench", help="print verification figures on held-out identities")
    b.add_argument("--weights", default="synthfaces")
    b.add_argument("--identities", type=int, default=200)
    args = parser.parse_args(argv)
    if args.cmd == "train":
        train_recognizer(args.identities, args.images_per_identity, args.steps, args.batch_size, args.lr,
                         args.seed, args.out)
        return
    backbone = FaceRecognitionBackbone(args.weights)
    for size in (64, 32):
        t0 = time.time()
        r = verification_report(backbone, size=size, num_identities=args.identities)
        print(f"{args.weights} recognizer, held-out identities, {size}x{size} ({time.time() - t0:.0f} s): "
              f"ROC-AUC {r['roc_auc']:.4f}  EER {100 * r['eer']:.2f}%  TAR@FAR=1e-3 {100 * r['tar_at_far_1e-3']:.1f}%")
        print(f"  no cut:     ceiling {r['ceiling']:.3f}  floor {r['floor']:.3f}  gap {r['gap']:.3f}")
        print(f"  across cut: ceiling {r['ceiling_cut']:.3f}  floor {r['floor_cut']:.3f}  gap {r['gap_cut']:.3f}")


if __name__ == "__main__":
    main()
