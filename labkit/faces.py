"""Turning faces into identity embeddings (notebook 03).

* :class:`FaceRecognitionBackbone`: a frozen face recognizer that maps images (B, 3, H, W) in [-1, 1]
  of any size to unit-norm 512-d embeddings. ``weights="synthfaces"`` (default) is a small CNN
  (:class:`SynthFaceNet`) trained on :mod:`labkit.synthfaces` identities and shipped in data/;
  ``"vggface2"`` is facenet's InceptionResnetV1 loaded by facenet's own code; or a path to a weights file.
* :func:`embed`, :func:`embed_with_face_probability`: embeddings (and P(face)) of many images, in batches;
  :func:`cosine_similarity_matrix`.

Around it: :mod:`labkit.face_detection` finds faces (MTCNN; its names are importable from here too),
:mod:`labkit.face_verification` measures how well embeddings separate identities, and
:mod:`labkit.recognizer_training` trains the synthfaces recognizer (``python -m labkit.faces train``,
``train-face-check``, ``bench``).
"""

from __future__ import annotations

import json
import os
import socket
import threading
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from labkit.common import data_path
from labkit.face_detection import MAX_PIXELS, MTCNN_MIN_SIDE, RANGE_TOLERANCE, FaceDetections, box_to_mask, detect_faces

VGGFACE2_URL = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt"
SYNTHFACES_WEIGHTS = "recognizer_synthfaces.safetensors"
#: The recognizer that scores identity (``"synthfaces-eval"``): trained like ``"synthfaces"`` and, besides, on
#: faces that wear other people's colours, hair and accessories, so that it reads the face itself. The video
#: model is conditioned on ``"synthfaces"`` and judged by this one, as ConsisID judges its ArcFace-conditioned
#: videos with a second recognizer (CurricularFace): a model is not graded by the network it was trained on.
EVAL_WEIGHTS = "recognizer_synthfaces_eval.safetensors"
#: The recognizer :func:`load_recognizer` gives by default, and so :func:`labkit.metrics.identity_scores`.
SCORING_RECOGNIZER = "synthfaces-eval"
#: The same network trained without look-alike families or colour jitter: the baseline notebook 03 compares.
BASELINE_WEIGHTS = "recognizer_synthfaces_baseline.safetensors"
EMBED_DIM = 512
#: A picture whose face probability is below this is refused where a face is required (references). Measured
#: with the shipped recognizer: 0 of 1,200 real held-out renders fall below it (lowest 0.046, 0.5% below 0.5),
#: while flat colour, noise and colour blocks sit near 0. Scores use the probability itself, not this cut.
NOT_A_FACE_BELOW = 0.02

__all__ = ["VGGFACE2_URL", "SYNTHFACES_WEIGHTS", "EVAL_WEIGHTS", "SCORING_RECOGNIZER", "BASELINE_WEIGHTS",
           "EMBED_DIM", "NOT_A_FACE_BELOW", "MAX_PIXELS",
           "MTCNN_MIN_SIDE", "RANGE_TOLERANCE", "FaceDetections", "box_to_mask", "detect_faces", "SynthFaceNet",
           "FaceRecognitionBackbone", "load_recognizer", "cosine_similarity_matrix", "embed",
           "embed_with_face_probability", "weights_metadata"]


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


def weights_metadata(path: Path) -> dict:
    """The safetensors metadata of a recognizer file ({} for other files or none)."""
    if path.suffix != ".safetensors":
        return {}
    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except Exception:  # noqa: BLE001 - an unreadable file is reported by _read_state_dict
        return {}


def _stored_levels(path: Path) -> dict:
    """The score levels a recognizer file carries in its metadata ({} when it has none)."""
    meta = weights_metadata(path)
    return json.loads(meta["levels"]) if "levels" in meta else {}


# facenet_pytorch is imported where it is used: it pulls in torchvision (about 2 s), which the synthfaces
# recognizer, the default, never needs.
def _inception_resnet_v1(**kwargs) -> nn.Module:
    from facenet_pytorch import InceptionResnetV1

    return InceptionResnetV1(**kwargs)


def _vggface2_cached_file() -> Path:
    from facenet_pytorch.models.inception_resnet_v1 import get_torch_home

    return Path(get_torch_home()) / "checkpoints" / os.path.basename(VGGFACE2_URL)


def _unreachable(url: str, timeout: float) -> str | None:
    """None when ``url``'s host accepts a connection within ``timeout`` s, else why not.

    Runs in a thread joined with a timeout because DNS lookups ignore socket timeouts.
    """
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
        torch.hub.download_url_to_file(VGGFACE2_URL, str(tmp), progress=True)
    except Exception as e:  # noqa: BLE001 - reported with instructions
        raise RuntimeError(f"downloading the vggface2 weights failed ({e}). {advice}") from e
    tmp.replace(cached)
    return cached


#: The recognizers shipped in data/: name -> (file, the arguments of `python -m labkit.faces train` that made it,
#: whether its face check was then retrained with `train-face-check`).
_SHIPPED = {
    "synthfaces": (SYNTHFACES_WEIGHTS, "", True),
    "synthfaces-eval": (EVAL_WEIGHTS, " --look-swap 0.6 --margin 0.35 --images-per-identity 48 --steps 4000", True),
    "synthfaces-baseline": (BASELINE_WEIGHTS, " --no-hard-negatives", False),
}


class FaceRecognitionBackbone(nn.Module):
    """A frozen face recognizer: images (B, 3, H, W) in [-1, 1], any H and W -> (B, 512) unit-norm embeddings.

    weights: "synthfaces" (default: the small CNN in data/ whose embeddings the video model is conditioned on),
    "synthfaces-eval" (the same network trained also on faces in other people's colours and hair: the one
    identity scores use), "synthfaces-baseline" (trained without hard negatives, for comparison), "vggface2"
    (facenet's InceptionResnetV1 with its vggface2 weights: cached, downloaded, or a clear error offline), or a
    path to a .safetensors/.pt state_dict of either network. It stays in eval mode and its parameters never
    need gradients, but gradients do flow back to the input images (for identity losses).
    """

    def __init__(self, weights: str | os.PathLike = "synthfaces", device=None):
        super().__init__()
        self.weights_name = str(weights)
        if weights in _SHIPPED:
            file, how, face_check = _SHIPPED[weights]
            path = Path(data_path(file))
            if not path.exists():
                then = f", then `python -m labkit.faces train-face-check --weights {path}`" if face_check else ""
                raise FileNotFoundError(f"{path} is missing: train it with `python -m labkit.faces train{how} --out "
                                        f"{path}`{then}")
            net, sd = SynthFaceNet(int(weights_metadata(path).get("width", 16))), _read_state_dict(path)
        elif weights == "vggface2":
            path = _ensure_vggface2()
            try:
                net = _inception_resnet_v1(pretrained="vggface2")  # facenet's own loading code
            except Exception as e:  # noqa: BLE001
                raise ValueError(f"facenet could not load {path}: {type(e).__name__}: {e}. The file may be "
                                 "corrupt: delete it and supply a good copy.") from e
            sd = None
        else:
            path = Path(weights)
            if not path.exists():
                raise FileNotFoundError(f"no weights file at {path}; use 'synthfaces', 'vggface2' or a path")
            sd = _read_state_dict(path)
            if any(k.startswith("features.") for k in sd):
                net = SynthFaceNet(int(weights_metadata(path).get("width", 16)))
            else:
                net = _inception_resnet_v1()
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
def load_recognizer(weights: str = SCORING_RECOGNIZER, device: str = "cpu") -> FaceRecognitionBackbone:
    """A shared, cached :class:`FaceRecognitionBackbone` (load once per process); by default the recognizer
    that scores identity (``"synthfaces-eval"``)."""
    return FaceRecognitionBackbone(weights, device=device)


def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity of every row of a (N, D) with every row of b (M, D) -> (N, M)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected a (N, D) and b (M, D) with the same D, got {tuple(a.shape)} and {tuple(b.shape)}")
    a = a / a.norm(dim=1, keepdim=True).clamp_min(eps)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(eps)
    return a @ b.T


# ----------------------------------------------------------------------------------------------- many images
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


# `python -m labkit.faces train | train-face-check | bench` is the recognizer's command line, which lives one
# floor up (labkit.recognizer_training) with the training code; it is imported only when run as a command.
if __name__ == "__main__":
    from labkit.recognizer_training import main

    main()
