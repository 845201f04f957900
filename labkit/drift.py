"""The drift engine: one setting of the course's consistency knobs -> a generated video and its identity scores.

Shared by the DriftLab (:mod:`labkit.widgets`) and the drift benchmark (:mod:`labkit.bench`):

* the knobs: :data:`STRATEGIES` (from :mod:`labkit.pipeline`), :data:`DEGRADATIONS` of the references and the
  lab's names for them (:data:`REFERENCE_QUALITIES`), :func:`degrade`;
* :class:`DriftSettings` (one point of the lab), :func:`validate_settings` and :class:`DriftResult`;
* :class:`DriftEngine`: the shipped generator and the recognizer, loaded once. :meth:`DriftEngine.sample`
  generates a batch of videos (the benchmark's and the lab's one way to call the pipeline) and
  :meth:`DriftEngine.measure` scores them with :func:`labkit.metrics.identity_scores`; ``engine(settings)``
  is the lab's whole computation for one setting.

The precomputed sweep of the lab (files in ``data/``) is :mod:`labkit.drift_sweep`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.functional import gaussian_blur

from labkit.common import data_path, get_device, to_uint8
from labkit.faces import EVAL_WEIGHTS, load_recognizer
from labkit.metrics import chunk_means, embed_frames, identity_scores, reference_embedding, variety
from labkit.pipeline import STRATEGIES, ReferenceConditionedGenerator, frames_for_chunks
from labkit.synthfaces import make_clip, make_clips, test_ids

__all__ = [
    "STRATEGIES", "STRATEGY_LABELS", "DEGRADATIONS", "REFERENCE_QUALITIES", "degrade", "NUM_HELDOUT",
    "MAX_REFERENCES", "MAX_CHUNKS", "MIN_STRENGTH", "MAX_STRENGTH", "INFERENCE_STEPS", "CONTEXT_FRAMES",
    "SCORING_REFERENCES", "DriftSettings", "DriftResult", "LabUnavailable", "validate_settings", "model_folder",
    "model_fingerprint", "DriftEngine", "get_engine", "chunk_means",
]

#: What each strategy mirrors, for labels (the seed article's comparison table).
STRATEGY_LABELS = {"implicit": "implicit (Sora 2)", "keyframe": "keyframe (Veo 3)",
                   "explicit": "explicit (Gen-4.5)", "face_aware": "face-aware (Kling 1.6)"}
#: Reference degradations: name -> (Gaussian noise std in [-1, 1] units, Gaussian blur sigma in pixels).
DEGRADATIONS = {"clean": (0.0, 0.0), "noise 0.25": (0.25, 0.0), "noise 0.5": (0.5, 0.0),
                "blur 1": (0.0, 1.0), "blur 2": (0.0, 2.0)}
#: The same degradations under the names the lab's reference-quality menu shows.
REFERENCE_QUALITIES = dict(zip(("clean", "noisy", "very noisy", "blurred", "very blurred"), DEGRADATIONS.values()))
#: Held-out identities the lab offers: index i means ``synthfaces.test_ids(NUM_HELDOUT)[i]``.
NUM_HELDOUT = 20
MAX_REFERENCES = 5
MAX_CHUNKS = 6
#: The identity_strength range of the lab (its slider's ends).
MIN_STRENGTH, MAX_STRENGTH = 0.0, 1.5
#: Denoising steps per chunk in the lab (the precomputed sweep records it and is ignored if it differs).
INFERENCE_STEPS = 20
#: Given frames per continuation chunk (the previous chunk's last ones).
CONTEXT_FRAMES = 2
#: Clean renders of the identity that every lab video is *scored* against (fixed, whatever the settings).
SCORING_REFERENCES = 5


def degrade(images: torch.Tensor, noise: float, blur: float, seed: int = 0) -> torch.Tensor:
    """Reference images (..., 3, H, W) in [-1, 1] with Gaussian blur (sigma, pixels) then Gaussian noise."""
    out = images
    if blur > 0:
        k = 2 * int(3 * blur) + 1
        out = gaussian_blur(out.reshape(-1, *out.shape[-3:]), [k, k], [blur, blur]).reshape(out.shape)
    if noise > 0:
        out = out + noise * torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return out.clamp(-1, 1)


@dataclass(frozen=True)
class DriftSettings:
    """One point of the lab: everything that determines a generated video and its measurements."""

    identity_strength: float = 0.8
    num_references: int = 3
    reference_quality: str = "clean"
    strategy: str = "face_aware"
    num_chunks: int = 2
    seed: int = 0
    identity: int = 0

    def key(self) -> tuple:
        """Hashable cache key; the strength is rounded so 0.8 and 0.8000001 share one entry."""
        return (round(float(self.identity_strength), 3), int(self.num_references), self.reference_quality,
                self.strategy, int(self.num_chunks), int(self.seed), int(self.identity))

    def replace(self, **changes) -> DriftSettings:
        return dataclasses.replace(self, **changes)


@dataclass
class DriftResult:
    """What one setting produced. Arrays are small numpy so results cache and ship cheaply.

    frames (F, H, W, 3) uint8; references (R, H, W, 3) uint8; normalised (F,) per-frame normalised identity
    (1 = ceiling, 0 = floor); cuts: frame indices where a new shot or chunk starts; frame_xy (F, 2),
    reference_xy (R, 2), others_xy (K, 2): 2-D projection of recognizer embeddings of the frames, the
    references and a few other identities; figures: the headline numbers by name.
    """

    settings: DriftSettings
    frames: np.ndarray
    references: np.ndarray
    normalised: np.ndarray
    cuts: list
    frame_xy: np.ndarray
    reference_xy: np.ndarray
    others_xy: np.ndarray
    figures: dict
    ceiling: float = 1.0
    floor: float = 0.0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


class LabUnavailable(RuntimeError):
    """Raised by a compute function that cannot run at all (no trained video model yet). The lab shows its
    message as it is, in place of a result, and tries again on the next request."""


def validate_settings(settings: DriftSettings) -> tuple[DriftSettings | None, list[str]]:
    """Check a setting. Returns (settings to compute, messages); settings is None when it cannot run.

    Out-of-range numbers the learner *typed* (identity_strength included: the lab's strength box takes any
    number) are refused with a message saying the allowed range; nothing is clipped silently.
    """
    try:
        strength = float(settings.identity_strength)
        refs, chunks = int(settings.num_references), int(settings.num_chunks)
        seed, ident = int(settings.seed), int(settings.identity)
    except (TypeError, ValueError, OverflowError) as err:
        return None, [f"settings must be numbers: {err}"]
    if not isinstance(settings.strategy, str) or not isinstance(settings.reference_quality, str):
        return None, [f"strategy and reference quality must be names, got {settings.strategy!r} and "
                      f"{settings.reference_quality!r}"]
    if not np.isfinite(strength):
        return None, [f"identity_strength must be a number in {MIN_STRENGTH:g}..{MAX_STRENGTH:g}, got {strength}"]
    errors = []
    if not MIN_STRENGTH <= strength <= MAX_STRENGTH:
        errors.append(f"identity_strength must be {MIN_STRENGTH:g}..{MAX_STRENGTH:g}, got {strength:g}")
    if not 1 <= refs <= MAX_REFERENCES:
        errors.append(f"number of references must be 1..{MAX_REFERENCES}, got {refs}")
    if not 0 <= ident < NUM_HELDOUT:
        errors.append(f"held-out identity must be 0..{NUM_HELDOUT - 1}, got {ident}")
    if not 1 <= chunks <= MAX_CHUNKS:
        errors.append(f"video length must be 1..{MAX_CHUNKS} chunks, got {chunks}")
    if seed < 0:
        errors.append(f"seed must be 0 or more, got {seed}")
    if settings.strategy not in STRATEGIES:
        errors.append(f"strategy must be one of {', '.join(STRATEGIES)}, got {settings.strategy!r}")
    if settings.reference_quality not in REFERENCE_QUALITIES:
        errors.append(f"reference quality must be one of {', '.join(REFERENCE_QUALITIES)}, "
                      f"got {settings.reference_quality!r}")
    if errors:
        return None, errors
    return DriftSettings(round(strength, 3), refs, settings.reference_quality, settings.strategy, chunks,
                         seed, ident), []


def model_folder(model_path=None) -> Path:
    """The video model folder the lab uses: ``model_path``, or the shipped ``data/identity_video_dit``."""
    return Path(model_path) if model_path is not None else data_path("identity_video_dit")


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_fingerprint(model_path=None) -> str | None:
    """sha256 of the model's weights file (None if there is none): ties a precomputed sweep to its model."""
    return _sha256(model_folder(model_path) / "diffusion_pytorch_model.safetensors")


def scorer_fingerprint() -> str | None:
    """sha256 of the scoring recognizer's weights: ties a precomputed sweep to the scores it was made with."""
    return _sha256(Path(data_path(EVAL_WEIGHTS)))


class _threads:
    """Context manager: torch uses ``n`` CPU threads inside (None: unchanged). With OpenMP builds the setting
    belongs to the calling thread, so the lab's worker thread does not change the kernel's."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.before = torch.get_num_threads()
        if self.n is not None:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


def _progress_callback(progress):
    """A ``callback_on_step_end`` that reports every denoising step to ``progress(fraction, message)`` (which
    may raise to stop the generation, as the lab's worker does when a newer setting is asked for)."""

    def on_step_end(pipe, step, timestep, callback_kwargs):
        total = max(pipe.num_timesteps, 1)
        progress((step + 1) / total, f"step {step + 1}/{total}")
        return callback_kwargs

    return on_step_end


class DriftEngine:
    """The shipped generator, the recognizer and the held-out identities, loaded once and shared.

    :meth:`sample` and :meth:`measure` are the one way the benchmark and the lab generate and score videos.
    ``engine(settings, progress)`` is the lab's computation for one :class:`DriftSettings`. One generation runs
    at a time (a lock), so the lab's worker and a notebook cell can share the engine. ``model_path`` picks
    another IdentityVideoDiT folder than the shipped one; a missing model raises :class:`LabUnavailable` with
    what to do about it. ``num_threads`` (default 1) is the number of CPU threads a generation uses, set for
    the calling thread only: the model is so small that a second thread gains little on an idle CPU, and when
    anything else runs (the kernel, a training) two threads that fight for two cores made one generation ten
    times slower in our measurements. None leaves torch's setting alone.
    """

    def __init__(self, device=None, steps: int = INFERENCE_STEPS, model_path=None, num_threads: int | None = 1):
        folder = model_folder(model_path)
        if not (folder / "config.json").is_file():
            raise LabUnavailable(
                f"No trained video model at {folder}, so the lab has nothing to generate with yet. Train one "
                "with notebook 08 (or `python -m labkit.train`) and save it there with model.save_pretrained, "
                "or point the lab at your own: DriftLab(model_path=...).")
        self.model_path = folder
        self.num_threads = num_threads
        self.device = device or get_device()
        self.pipe = ReferenceConditionedGenerator.from_shipped(device=self.device, path=folder)
        self.recognizer = load_recognizer(device=str(self.device))  # the scoring recognizer, not the encoder
        self.size = self.pipe.model.config.sample_size
        self.max_frames = self.pipe.model.config.max_frames
        self.steps = steps
        self.ids = test_ids(NUM_HELDOUT)
        self._identity_cache: dict = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ shared by the benchmark and the lab
    def sample(self, refs: torch.Tensor, num_frames: int, seed: int, face_masks: torch.Tensor | None = None,
               steps: int | None = None, progress=None, **kwargs):
        """Generate a batch: refs (B, R, 3, S, S), the noise from ``seed``, ``steps`` DDIM steps a chunk
        (default the engine's), no face check (the references are renders). ``progress(fraction, message)``
        hears every step. Other keyword arguments go to ``ReferenceConditionedGenerator.generate``."""
        callback = _progress_callback(progress) if progress is not None else None
        return self.pipe.generate(reference_images=refs, num_frames=num_frames, face_masks=face_masks,
                                  generator=torch.Generator().manual_seed(seed),
                                  num_inference_steps=steps or self.steps, check_faces=False, progress=False,
                                  callback_on_step_end=callback, **kwargs)

    def measure(self, frames: torch.Tensor, score_images: torch.Tensor):
        """identity_scores of frames (B, F, 3, S, S) against score_images (B, R, 3, S, S): (scores, parts)."""
        return identity_scores(frames, score_images, self.recognizer, return_parts=True)

    # ------------------------------------------------------------------------------------------ the lab
    def identity(self, index: int) -> dict:
        """Everything fixed for one held-out identity: references, layout, scoring embeddings, projection."""
        if index in self._identity_cache:
            return self._identity_cache[index]
        with _threads(self.num_threads):
            return self._make_identity(index)

    def _make_identity(self, index: int) -> dict:
        ident = int(self.ids[index])
        n = frames_for_chunks(MAX_CHUNKS, self.max_frames, CONTEXT_FRAMES)
        given = make_clip(ident, num_frames=n, size=self.size, num_refs=MAX_REFERENCES,
                          generator=torch.Generator().manual_seed(ident))
        scoring = make_clip(ident, num_frames=16, size=self.size, num_refs=SCORING_REFERENCES, num_cuts=3,
                            generator=torch.Generator().manual_seed(ident + 1))
        others = [i for i in range(NUM_HELDOUT) if i != index][:12]
        strangers = make_clips(self.ids[others], num_frames=1, size=self.size, num_refs=1,
                               generator=torch.Generator().manual_seed(7))
        ref_emb = embed_frames(self.recognizer, scoring.references)                 # (R, 512)
        real_emb = embed_frames(self.recognizer, scoring.frames)                    # (16, 512)
        other_emb = embed_frames(self.recognizer, strangers.references[:, 0])       # (K, 512)
        # A fixed 2-D basis per identity (PCA of its real frames and the strangers) keeps the picture still
        # while the sliders move, so only the generated frames move in it.
        basis_points = torch.cat([real_emb, other_emb]).numpy()
        mean = basis_points.mean(0)
        _, _, vt = np.linalg.svd(basis_points - mean, full_matrices=False)
        item = {"references": given.references, "masks": given.masks, "ref_emb": ref_emb,
                "score_images": scoring.references,
                "ref_mean": reference_embedding(ref_emb[None]), "mean": mean, "basis": vt[:2].T,
                "others_xy": (other_emb.numpy() - mean) @ vt[:2].T, "identity": ident}
        self._identity_cache[index] = item
        return item

    def __call__(self, settings: DriftSettings, progress=None) -> DriftResult:
        """One video for one setting (what the lab shows)."""
        return self.run(settings, progress=progress)[0]

    def run(self, settings: DriftSettings, identities=None, progress=None, reanchor_every: int | None = None,
            steps: int | None = None) -> list[DriftResult]:
        """Videos of several held-out identities (indices; default ``settings.identity``) in one batch.

        The batch shares the setting; its noise is drawn for the whole batch, so a video made in a batch
        differs from the same setting made alone (both are fair samples). ``reanchor_every`` gives the
        keyframe again every n-th chunk, whatever the strategy.
        """
        start = time.perf_counter()
        identities = [settings.identity] if identities is None else list(identities)
        with _threads(self.num_threads):
            return self._run(settings, identities, progress, reanchor_every, steps, start)

    def _run(self, settings, identities, progress, reanchor_every, steps, start) -> list[DriftResult]:
        who = [self.identity(i) for i in identities]
        noise, blur = REFERENCE_QUALITIES[settings.reference_quality]
        refs = torch.stack([degrade(w["references"][:settings.num_references], noise, blur, seed=10_000 + settings.seed)
                            for w in who])                                          # (B, R, 3, S, S)
        num_frames = frames_for_chunks(settings.num_chunks, self.max_frames, CONTEXT_FRAMES)
        with self._lock:
            out = self.sample(refs, num_frames, settings.seed, torch.stack([w["masks"][:num_frames] for w in who]),
                              steps=steps, progress=progress, identity_strength=settings.identity_strength,
                              strategy=settings.strategy, context_frames=CONTEXT_FRAMES, reanchor_every=reanchor_every)
        frames = out.frames.cpu()                                                   # (B, F, 3, S, S)
        scores, parts = self.measure(frames, torch.stack([w["score_images"] for w in who]))
        emb = parts["embeddings"]                                                   # (B, F, 512)
        norm = scores.numpy()                                                       # (B, F)
        faces = parts["face_probability"].numpy()
        moving = variety(frames, out.cuts)
        seconds = (time.perf_counter() - start) / len(who)
        results = []
        for b, (index, w) in enumerate(zip(identities, who)):
            per_chunk = chunk_means(norm[b:b + 1], out.chunk_starts)[0].tolist()
            figures = {"mean": float(norm[b].mean()), "face_quality": float((faces[b] >= 0.5).mean()),
                       "first_chunk": per_chunk[0], "last_chunk": per_chunk[-1],
                       "drift": per_chunk[0] - per_chunk[-1], "variety": float(moving[b])}
            project = lambda e, w=w: (np.asarray(e, dtype=np.float64) - w["mean"]) @ w["basis"]
            results.append(DriftResult(
                settings=settings.replace(identity=index), frames=to_uint8(frames[b]), references=to_uint8(refs[b]),
                normalised=norm[b], cuts=torch.nonzero(out.cuts[b]).flatten().tolist(),
                frame_xy=project(emb[b].numpy()), reference_xy=project(w["ref_emb"].numpy()),
                others_xy=w["others_xy"], figures=figures, seconds=seconds,
                extra={"per_chunk": per_chunk, "chunk_starts": list(out.chunk_starts)}))
        return results


_ENGINES: dict = {}
_ENGINE_LOCK = threading.Lock()


def get_engine(model_path=None) -> DriftEngine:
    """The session's :class:`DriftEngine` for a model folder (default: the shipped one), created on first use.

    Raises :class:`LabUnavailable` while the model is missing; a model that appears later is picked up.
    """
    key = str(model_folder(model_path))
    with _ENGINE_LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = DriftEngine(model_path=model_path)
        return _ENGINES[key]
