"""Training the synthfaces recognizer (:class:`labkit.faces.SynthFaceNet`) and its face check, and the
command line ``python -m labkit.faces train | train-face-check | bench``.

The recognizer learns identities with an ArcFace loss from rendered faces that are colour-jittered and
degraded afresh at every step (:func:`colour_jitter`, :func:`_degrade`), with look-alike families as hard
negatives (:func:`lookalike_donors`). Its second head, the face check, learns to refuse what a generator
draws when it fails (:func:`not_faces`, :func:`corrupted_faces`).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from labkit import synthfaces
from labkit.common import data_path, seed_everything
from labkit.face_verification import verification_report
from labkit.faces import (
    EMBED_DIM,
    EVAL_WEIGHTS,
    SCORING_RECOGNIZER,
    SYNTHFACES_WEIGHTS,
    FaceRecognitionBackbone,
    SynthFaceNet,
    weights_metadata,
)
from labkit.metrics import measure_levels


# ----------------------------------------------------------------------------------------------- augmentations
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



# ----------------------------------------------------------------------------------------------- training
def train_face_check(weights=None, steps: int = 2000, batch_size: int = 128, lr: float = 1e-3, seed: int = 1,
                     out: str | None = None, num_identities: int = 1500) -> Path:
    """Retrain only the face-check head of a synthfaces recognizer, with :func:`corrupted_faces` added to the
    negatives. The features and the embedding head stay frozen, so every embedding, and every model
    conditioned on them, is unchanged; only P(face) gets stricter. Writes the recognizer file back (same
    metadata) to ``out`` (default: the file it read)."""
    path = Path(weights) if weights else data_path(SYNTHFACES_WEIGHTS)
    meta = weights_metadata(path)
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
    ids = synthfaces.train_ids(num_classes)
    in_families = int(num_classes * share_in_families) // family_size * family_size
    donors = ids.clone()
    donors[:in_families] = ids[:in_families].view(-1, family_size)[:, :1].expand(-1, family_size).reshape(-1)
    return donors


def train_recognizer(num_identities: int = 1500, images_per_identity: int = 12, steps: int = 3000,
                     batch_size: int = 128, lr: float = 3e-3, seed: int = 0, out: str | None = None,
                     log_every: int = 100, time_limit: float | None = None, hard_negatives: bool = True,
                     width: int = 16, margin: float = 0.45, look_swap: float = 0.0) -> Path:
    """Train :class:`SynthFaceNet` with an ArcFace loss on train identities and its face check; write fp16
    safetensors with the score levels (:func:`labkit.metrics.measure_levels`) in the metadata.

    Faces are rendered once into a pool (random nuisances: pose, expression, lighting, background, camera,
    clothes, i.e. everything a cut changes), the classes in look-alike families of six
    (:func:`lookalike_donors`). At every step 85% of them are colour-jittered, all are degraded afresh, and half a batch
    of non-faces made from them (:func:`not_faces`) trains the face check. ``hard_negatives=False`` trains
    the same network without look-alike families and colour jitter (the comparison notebook 03 shows).
    ``look_swap`` is the share of each identity's faces rendered in a random other person's colours, hair and
    accessories (``identity_traits(look_from=...)``) and still labelled as that identity: with most of them
    swapped, colour and hair no longer tell a class apart and the recognizer has to read the face geometry.
    The scoring recognizer (``"synthfaces-eval"``) is trained that way; the identity encoder (``"synthfaces"``)
    without, so that its embeddings keep hair and colours for the video model to draw.
    """
    seed_everything(seed)
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    ids = synthfaces.train_ids(num_identities)
    donors = lookalike_donors(num_identities) if hard_negatives else ids  # the baseline: everyone their own look
    pool = []
    with torch.no_grad():
        for i in range(0, num_identities, 64):
            chunk = ids[i:i + 64].repeat_interleave(images_per_identity)
            look = donors[i:i + 64].repeat_interleave(images_per_identity)
            if look_swap > 0:  # the same face in another person's colours, hair and accessories: still this class
                swap = torch.rand(len(look), generator=g) < look_swap
                look = torch.where(swap, torch.randint(synthfaces.TRAIN_ID_LIMIT, (len(look),), generator=g), look)
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
        if hard_negatives:  # most images in other colours, so that colour alone cannot tell two people apart
            jitter = (torch.rand(batch_size, 1, 1, 1, generator=g) < 0.85).float()
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
    backbone = FaceRecognitionBackbone.from_network(net)
    levels = {str(size): measure_levels(backbone, size) for size in (32, 64)}
    save_file({k: v.half().contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"num_identities": str(num_identities), "steps": str(steps), "seed": str(seed),
                        "hard_negatives": str(hard_negatives), "width": str(width), "margin": str(margin),
                        "look_swap": str(look_swap),
                        "levels": json.dumps(levels)})
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) after {time.time() - t0:.0f} s; levels {levels}",
          flush=True)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m labkit.faces", description="Train or measure the synthfaces "
                                     "recognizer.")
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
    tr.add_argument("--look-swap", type=float, default=0.0,
                    help="share of each identity's faces rendered in another person's colours, hair and accessories "
                    "(0.6 for the scoring recognizer, data/" + EVAL_WEIGHTS + ")")
    tr.add_argument("--no-hard-negatives", action="store_true",
                    help="no look-alike families and no colour jitter (the baseline that reads colours)")
    fc = sub.add_parser("train-face-check", help="retrain only the face-check head, with corrupted faces as "
                        "negatives (embeddings unchanged)")
    fc.add_argument("--weights", default=None, help="recognizer file (default: the shipped one)")
    fc.add_argument("--steps", type=int, default=2000)
    fc.add_argument("--out", default=None)
    b = sub.add_parser("bench", help="print verification figures on held-out identities")
    b.add_argument("--weights", default=SCORING_RECOGNIZER)
    b.add_argument("--identities", type=int, default=200)
    args = parser.parse_args(argv)
    if args.cmd == "train-face-check":
        train_face_check(args.weights, args.steps, out=args.out)
        return
    if args.cmd == "train":
        train_recognizer(args.identities, args.images_per_identity, args.steps, args.batch_size, args.lr,
                         args.seed, args.out, hard_negatives=not args.no_hard_negatives, width=args.width,
                         margin=args.margin, look_swap=args.look_swap)
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
