"""Sampling: one denoising step, and the ReferenceConditionedGenerator pipeline with four strategies.

:func:`denoise_step` is the article's "core problem" made runnable: a model predicts, a diffusers scheduler
steps, and a stochastic scheduler (DDPM) draws fresh noise at every step, so two samples from the same
start drift apart.

:class:`ReferenceConditionedGenerator` is a diffusers ``DiffusionPipeline`` around
:class:`labkit.model.IdentityVideoDiT`. ``generate`` encodes the reference faces with the frozen recognizer,
averages them, turns them into identity tokens and denoises with DDIM, passing
``cross_attention_kwargs={"identity_tokens": ..., "identity_strength": ...}``. Long videos are made chunk by
chunk (:func:`plan_chunks`); each chunk continues from the last frames of the previous one, with a cut between
chunks, and every step of every chunk is one :func:`denoise_step`. As in diffusers, the recognizer is a
registered component, ``callback_on_step_end`` sees every step, and progress shows in the pipeline's own
progress bar (``set_progress_bar_config``).

The four strategies of the course, behind one argument. By default the first reference is also the
keyframe, the given first frame of the video; with ``keyframe=False`` the first chunk is drawn from pure
noise and the references alone (as IP-Adapter, ID-Animator and ConsisID do), which only the strategies
with identity tokens can do:

=============  ==================================================================================
implicit       temporal context only: each chunk sees the previous chunk's last frames (Sora-style)
keyframe       keyframe anchoring: the keyframe is given again to every chunk (Veo-style)
explicit       identity tokens from the references in every chunk (Gen-4-style)
face_aware     identity tokens, with identity attention limited to the face masks (Kling-style)
=============  ==================================================================================
"""

from __future__ import annotations

import inspect
import numbers
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from labkit.common import to_uint8
from labkit.faces import (
    NOT_A_FACE_BELOW,
    FaceRecognitionBackbone,
    detect_faces,
    embed_with_face_probability,
    load_recognizer,
)
from labkit.identity import region_routing_mask
from labkit.model import load_model

__all__ = ["denoise_step", "make_scheduler", "ReferenceConditionedGenerator", "GeneratorOutput",
           "STRATEGIES", "centred_face_masks", "has_face", "frames_for_chunks", "Chunk", "plan_chunks"]

STRATEGIES = ("implicit", "keyframe", "explicit", "face_aware")

#: The noise schedule shared by training (DDPM) and sampling (DDIM); v-prediction suits few DDIM steps.
SCHEDULE = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                clip_sample=True, clip_sample_range=1.0)


def make_scheduler(kind: str = "ddim", **overrides):
    """The kit's noise schedule as a diffusers scheduler: "ddpm" (training, stochastic) or "ddim" (sampling)."""
    cfg = {**SCHEDULE, **overrides}
    if kind == "ddpm":
        return DDPMScheduler(**cfg)
    if kind == "ddim":
        return DDIMScheduler(**cfg, timestep_spacing="trailing", set_alpha_to_one=True)
    raise ValueError(f"scheduler kind must be 'ddpm' or 'ddim', got {kind!r}")


def denoise_step(x_t: torch.Tensor, model, t, scheduler, generator: torch.Generator | None = None,
                 model_kwargs: dict | None = None, eta: float | None = None) -> torch.Tensor:
    """One reverse-diffusion step: the model predicts, the scheduler steps, x_t -> x_{t-1}.

    x_t: noisy sample (any shape the model takes, e.g. (B, F, 3, H, W)). model: a callable returning a tensor
    or an object with ``.sample`` (diffusers models). t: the current timestep from ``scheduler.timesteps``.
    A DDPM scheduler adds fresh noise from ``generator`` at every step (this is where drift comes from);
    DDIM with eta=0 is deterministic.
    """
    out = model(x_t, t, **(model_kwargs or {}))
    prediction = out.sample if hasattr(out, "sample") else out
    if prediction.shape != x_t.shape:
        raise ValueError(f"model output {tuple(prediction.shape)} does not match x_t {tuple(x_t.shape)}")
    params = inspect.signature(scheduler.step).parameters
    kwargs = {"generator": generator} if "generator" in params else {}
    if eta is not None and "eta" in params:
        kwargs["eta"] = eta
    return scheduler.step(prediction, t, x_t, **kwargs).prev_sample


def frames_for_chunks(num_chunks: int, max_frames: int = 8, context_frames: int = 2) -> int:
    """Frames in a chunked video of ``num_chunks`` model calls: the first gives max_frames - 1 new frames after
    the keyframe, every later one max_frames - context_frames (the inverse of the generator's chunk count)."""
    return (max_frames - 1) + (num_chunks - 1) * (max_frames - context_frames)


def centred_face_masks(num_frames: int, size: int = 32, radius: float = 0.36) -> torch.Tensor:
    """A default layout: a centred ellipse face mask for every frame, (num_frames, size, size) in {0, 1}."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    mask = ((xx / (radius * 2)) ** 2 + ((yy - 0.05) / (radius * 2.4)) ** 2 <= 1).float()
    return mask.expand(num_frames, size, size).clone()


@torch.no_grad()
def has_face(images: torch.Tensor, recognizer=None, min_probability: float | None = None) -> torch.Tensor:
    """Is there a face to take an identity from? images (N, 3, H, W) in [-1, 1] -> bool (N,).

    First the face check of the kit's recognizer (``recognizer`` if it has one, else the synthfaces one),
    trained on renders against colour blocks, mush, noise and flat colour: an image counts when its face
    probability reaches ``min_probability`` (default ``labkit.faces.NOT_A_FACE_BELOW``); then, for what it
    rejects, MTCNN (``labkit.faces.detect_faces``), which finds real faces in photos.
    """
    if not getattr(recognizer, "has_face_check", False):
        recognizer = load_recognizer()
    threshold = NOT_A_FACE_BELOW if min_probability is None else min_probability
    found = embed_with_face_probability(recognizer, images)[1] >= threshold
    if not found.all():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no face found" is the answer we are asking for here
            det = detect_faces(images[~found])
        missing = torch.nonzero(~found).flatten()
        found[missing[det.image_index.unique()]] = True
    return found


@dataclass(frozen=True)
class Chunk:
    """One model call of a chunked video: ``start`` is the index of its first new frame in the video,
    ``num_given`` how many frames it is given (the keyframe and/or the previous chunk's last frames),
    ``num_new`` how many it makes, ``anchor`` whether the keyframe is given again in it."""

    index: int
    start: int
    num_given: int
    num_new: int
    anchor: bool


def plan_chunks(num_frames: int, chunk_len: int, context_frames: int = 2, keyframe: bool = True,
                strategy: str = "explicit", reanchor_every: int | None = None) -> list[Chunk]:
    """How a video of ``num_frames`` new frames is cut into model calls of at most ``chunk_len`` frames.

    The first chunk is given the keyframe (or nothing, with ``keyframe=False``); every later chunk is given
    ``context_frames`` frames: the previous chunk's last ones, with the keyframe in the first slot when it is
    anchored (the "keyframe" strategy, or every ``reanchor_every``-th chunk).
    """
    plan, produced = [], 0
    while produced < num_frames:
        i = len(plan)
        anchor = keyframe and i > 0 and (strategy == "keyframe" or bool(reanchor_every and i % reanchor_every == 0))
        given = (1 if keyframe else 0) if i == 0 else context_frames
        new = min(chunk_len - given, num_frames - produced)
        plan.append(Chunk(i, produced, given, new, anchor))
        produced += new
    return plan


@dataclass
class GeneratorOutput(BaseOutput):
    """frames (B, F, 3, H, W) in [-1, 1]: the generated frames only (no given context);
    cuts (B, F) bool: where a new shot starts; face_masks (B, F, H, W): the layout used;
    chunk_starts: index of the first new frame of each chunk; strategy: the strategy used."""

    frames: torch.Tensor
    cuts: torch.Tensor
    face_masks: torch.Tensor
    chunk_starts: list
    strategy: str


class ReferenceConditionedGenerator(DiffusionPipeline):
    """Reference images -> a long video of that face, with one of four consistency strategies.

    Components: ``model`` (IdentityVideoDiT), ``scheduler`` (DDIM for sampling) and ``recognizer`` (the frozen
    face recognizer that turns references into embeddings; default the kit's synthfaces one).
    """

    model_cpu_offload_seq = "model"
    _optional_components = ["recognizer"]  # a component; None at construction means the kit's synthfaces one
    _callback_tensor_inputs = ["latents"]

    def __init__(self, model, scheduler, recognizer=None):
        super().__init__()
        if recognizer is None:
            recognizer = FaceRecognitionBackbone(device=model.device)
        self.register_modules(model=model, scheduler=scheduler, recognizer=recognizer)

    @classmethod
    def from_shipped(cls, device=None, path=None) -> ReferenceConditionedGenerator:
        """The shipped checkpoint (data/identity_video_dit), a DDIM scheduler and the synthfaces recognizer."""
        return cls(load_model(path, device=device), make_scheduler("ddim"))

    @property
    def num_timesteps(self) -> int:
        """Denoising steps of the last (or running) ``generate`` call, over all its chunks."""
        return getattr(self, "_num_timesteps", 0)

    def _prepare_references(self, reference_images, check_faces: bool):
        """(R, 3, H, W) or (B, R, 3, H, W) or (3, H, W) -> (B, R, 3, S, S) at the model's size."""
        refs = reference_images
        if not torch.is_tensor(refs):
            raise TypeError(f"reference_images must be a tensor, got {type(refs).__name__}")
        if refs.ndim == 3:
            refs = refs[None, None]
        elif refs.ndim == 4:
            refs = refs[None]
        if refs.ndim != 5 or refs.shape[2] != 3 or refs.shape[1] == 0:
            raise ValueError("reference_images must be (3, H, W), (R, 3, H, W) or (B, R, 3, H, W) with R >= 1, "
                             f"got shape {tuple(reference_images.shape)}")
        if 0 in refs.shape or refs.numel() > 2**29:  # refused from the shape, before anything is copied
            raise ValueError(f"reference_images of shape {tuple(reference_images.shape)} are empty or too big")
        if not refs.is_floating_point():
            raise TypeError(f"reference_images must be float in [-1, 1], got dtype {refs.dtype} (uint8 images: "
                            "x / 127.5 - 1)")
        if not torch.isfinite(refs).all() or refs.abs().max() > 1.02:
            raise ValueError(f"reference_images must be finite and in [-1, 1], got values in "
                             f"[{refs.min().item():g}, {refs.max().item():g}]")
        b, r = refs.shape[:2]
        size = self.model.config.sample_size
        flat = refs.reshape(b * r, *refs.shape[2:]).float().to(self.model.device)
        if check_faces:  # on the pictures as given, before they are resized to the model's size
            found = has_face(flat.cpu(), self.recognizer)
            if not found.all():
                bad = torch.nonzero(~found).flatten().tolist()
                raise ValueError(f"no face in reference image(s) {bad} (flattened index over B*R = {b}*{r}, "
                                 f"reference_images of shape {tuple(reference_images.shape)}): give pictures of "
                                 "the person's face")
        if flat.shape[-1] != size or flat.shape[-2] != size:
            flat = F.interpolate(flat, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return flat.reshape(b, r, 3, size, size)

    def check_inputs(self, reference_images, num_frames, identity_strength, strategy, num_inference_steps,
                     chunking, context_frames, identity_guidance, init_strength, keyframe, output_type):
        """Refuse bad arguments of :meth:`generate` with a message that names the argument."""
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
        for name, value, top in (("num_frames", num_frames, 10_000), ("num_inference_steps", num_inference_steps,
                                                                      self.scheduler.config.num_train_timesteps)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= top:
                raise ValueError(f"{name} must be an int in 1..{top}, got {value!r}")
        for name, value in (("identity_strength", identity_strength), ("identity_guidance", identity_guidance)):
            if not isinstance(value, (numbers.Real, torch.Tensor)) or not torch.isfinite(torch.as_tensor(value)).all():
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if output_type not in ("pt", "np"):
            raise ValueError(f"output_type must be 'pt' or 'np', got {output_type!r}")
        if reference_images is None:
            raise ValueError("reference_images is required: (R, 3, H, W) or (B, R, 3, H, W)")
        chunk_len = self.model.config.max_frames
        one_call = chunk_len - 1 if keyframe else chunk_len
        if not chunking and num_frames > one_call:
            raise ValueError(f"num_frames={num_frames} is beyond what the model makes in one call "
                             f"({one_call} new frames{' after the keyframe' if keyframe else ''}); pass chunking=True")
        if not 0.0 < init_strength <= 1.0:
            raise ValueError(f"init_strength must be in (0, 1], got {init_strength}")
        if not 1 <= context_frames < chunk_len:
            raise ValueError(f"context_frames must be in 1..{chunk_len - 1}, got {context_frames}")
        if not keyframe and strategy in ("implicit", "keyframe"):
            raise ValueError(f"strategy {strategy!r} needs a first frame to start from (it has no identity tokens "
                             "to draw the person from the references alone): use keyframe=True, or the 'explicit' "
                             "or 'face_aware' strategy with keyframe=False")

    def encode_references(self, refs: torch.Tensor) -> torch.Tensor:
        """References (B, R, 3, S, S) -> identity tokens (B, L, identity_dim): the recognizer's embeddings of
        the R references, averaged by the model's identity encoder."""
        b, r, size = refs.shape[0], refs.shape[1], refs.shape[-1]
        emb = self.recognizer(refs.reshape(-1, 3, size, size)).reshape(b, r, -1)
        return self.model.encode_identity(emb.to(self.model.device))

    def _model_call(self, x, t, context, given, masks, cuts, tokens, strength, guidance, routing=None):
        kwargs = dict(context_frames=context, context_mask=given, cuts=cuts)
        identity = {"identity_tokens": tokens, "identity_strength": strength}
        if routing is not None:
            identity["identity_attention_mask"] = routing
        cond = self.model(x, t, face_masks=masks, cross_attention_kwargs=identity, **kwargs).sample
        if tokens is None or guidance == 1.0:
            return cond
        uncond = self.model(x, t, face_masks=None, **kwargs).sample
        return uncond + guidance * (cond - uncond)

    def _chunk_inputs(self, chunk: Chunk, first_frame, outputs, context_frames, cuts_between_chunks,
                      layout_masks, strategy, tokens, character_masks, token_character) -> dict:
        """The model's keyword arguments for one chunk: given frames, their mask, cuts, face masks, routing."""
        b, size, device = first_frame.shape[0], first_frame.shape[-1], first_frame.device
        if chunk.index == 0:
            given = [first_frame] if chunk.num_given else []
        else:
            last = torch.cat(outputs, dim=1)
            prev = last[:, -(context_frames - 1):] if chunk.anchor else last[:, -context_frames:]
            given = ([first_frame] if chunk.anchor else []) + list(prev.unbind(1))
        k, f = chunk.num_given, chunk.num_given + chunk.num_new
        ctx = torch.zeros(b, f, 3, size, size, device=device)
        if k:
            ctx[:, :k] = torch.stack(given, dim=1)
        given_mask = torch.zeros(b, f, dtype=torch.bool, device=device)
        given_mask[:, :k] = True
        cuts = torch.zeros(b, f, dtype=torch.bool, device=device)
        if k and (chunk.index == 0 or cuts_between_chunks):
            cuts[:, k] = True
        if chunk.anchor and k > 1:
            cuts[:, 1] = True  # the keyframe is a different shot from the previous chunk's frames
        new = slice(chunk.start, chunk.start + chunk.num_new)
        masks = None
        if strategy == "face_aware":
            new_masks = layout_masks[:, new]
            masks = torch.cat([new_masks[:, :1].expand(b, k, size, size), new_masks], dim=1)
        routing = None
        if character_masks is not None and tokens is not None:
            new_cm = character_masks[:, new].to(device)
            cm = torch.cat([new_cm[:, :1].expand(b, k, *new_cm.shape[2:]), new_cm], dim=1)
            routing = region_routing_mask(cm, token_character, grid=self.model.grid)
        return dict(context=ctx, given=given_mask, masks=masks, cuts=cuts, routing=routing)

    @torch.no_grad()
    def generate(self, prompt: str | None = None, reference_images: torch.Tensor | None = None,
                 num_frames: int = 16, identity_strength: float = 0.8, strategy: str = "explicit",
                 generator: torch.Generator | None = None, num_inference_steps: int = 20,
                 face_masks: torch.Tensor | None = None, layout: str = "centred", chunking: bool = True,
                 context_frames: int = 2, cuts_between_chunks: bool = True, reanchor_every: int | None = None,
                 identity_guidance: float = 1.0, init_strength: float = 1.0, check_faces: bool = True,
                 keyframe: bool = True,
                 progress: bool = True, identity_tokens: torch.Tensor | None = None,
                 character_masks: torch.Tensor | None = None, token_character: torch.Tensor | None = None,
                 output_type: str = "pt", return_dict: bool = True, callback_on_step_end=None,
                 callback_on_step_end_tensor_inputs: list[str] = ("latents",)):
        """Generate ``num_frames`` frames of the face in ``reference_images``.

        prompt: kept for the diffusers-style signature; the lab model has no text encoder and ignores it.
        reference_images: (R, 3, H, W) or (B, R, 3, H, W) in [-1, 1], any size (resized to the model's);
            the first one is also the keyframe. R references are averaged into one identity.
        identity_strength: scale of identity attention (0 = off). strategy: one of STRATEGIES.
        face_masks: layout (F, H, W) or (B, F, H, W) at the model's size, e.g. from synthfaces; otherwise
            ``layout="centred"`` puts an ellipse in the middle. Used by "face_aware" only.
        chunking: False forbids chunks (then num_frames must fit in one model call).
        context_frames: given frames per continuation chunk (the previous chunk's last ones; with keyframe
            anchoring the keyframe takes one of these slots). The chunks are :func:`plan_chunks`.
        reanchor_every: also give the keyframe every n-th chunk, whatever the strategy.
        identity_guidance: > 1 pushes the prediction away from the no-identity prediction (costs 2x).
        init_strength: how much noise each chunk starts from. 1.0 (default) = pure noise; below 1, the new
            frames start from the chunk's last given frame noised to that level and only the remaining steps
            run (SDEdit-style image-to-video; not for the first chunk when keyframe=False).
        keyframe: True gives the first reference as the video's first frame; False draws the first chunk from
            pure noise and the references only (explicit and face_aware strategies; implicit and keyframe
            need a first frame).
        identity_tokens: precomputed tokens (B, L, identity_dim) used instead of encoding reference_images
            (which still give the keyframe), e.g. several characters' tokens one after the other.
        character_masks, token_character: region routing for several characters: per-character layout
            (B, F, C, H, W) and the character of each identity token (L,); each character's face region
            then attends only to its own tokens (``labkit.identity.region_routing_mask``).
        progress: show the pipeline's progress bar (configure it with ``set_progress_bar_config``).
        callback_on_step_end: as in diffusers, ``callback(pipe, step, timestep, callback_kwargs) -> dict`` after
            every denoising step (``step`` counts over all chunks, out of ``pipe.num_timesteps``);
            callback_kwargs holds ``callback_on_step_end_tensor_inputs`` ("latents": the chunk's sample), and
            a returned "latents" replaces it. An exception raised in it stops the generation.
        Returns GeneratorOutput(frames (B, F, 3, H, W), cuts (B, F), face_masks, chunk_starts, strategy),
        or a tuple (frames,) when return_dict is False; output_type "np" gives uint8 (B, F, H, W, 3).
        """
        self.check_inputs(reference_images, num_frames, identity_strength, strategy, num_inference_steps,
                          chunking, context_frames, identity_guidance, init_strength, keyframe, output_type)
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs {sorted(unknown)} are not among "
                             f"{self._callback_tensor_inputs}")
        refs = self._prepare_references(reference_images, check_faces)
        device, b, size = self.model.device, refs.shape[0], self.model.config.sample_size
        tokens = None
        if strategy in ("explicit", "face_aware") and identity_tokens is not None:
            if identity_tokens.ndim != 3 or identity_tokens.shape[0] != b:
                raise ValueError(f"identity_tokens must be (B={b}, L, D), got {tuple(identity_tokens.shape)}")
            tokens = identity_tokens.to(device)
        elif strategy in ("explicit", "face_aware"):
            tokens = self.encode_references(refs)
        layout_masks = self._layout(face_masks, layout, b, num_frames, size, device)
        plan = plan_chunks(num_frames, self.model.config.max_frames, context_frames, keyframe, strategy,
                           reanchor_every)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        full_timesteps = self.scheduler.timesteps
        timesteps = full_timesteps  # continuation chunks start part-way with init_strength < 1
        if init_strength < 1.0:
            timesteps = timesteps[timesteps <= init_strength * self.scheduler.config.num_train_timesteps]
        self._num_timesteps = sum(len(timesteps if c.num_given else full_timesteps) for c in plan)
        bar = self.progress_bar(total=self._num_timesteps) if progress else None
        outputs, cut_flags, step = [], [], 0
        try:
            for chunk in plan:
                inputs = self._chunk_inputs(chunk, refs[:, 0], outputs, context_frames, cuts_between_chunks,
                                            layout_masks, strategy, tokens, character_masks, token_character)
                k, f = chunk.num_given, chunk.num_given + chunk.num_new
                model_kwargs = dict(**inputs, tokens=tokens, strength=identity_strength, guidance=identity_guidance)
                latents = randn_tensor((b, f, 3, size, size), generator=generator, device=device)
                if init_strength < 1.0 and k:
                    start = inputs["context"][:, k - 1:k].expand(b, f, 3, size, size)
                    latents = self.scheduler.add_noise(start, latents, timesteps[:1].repeat(b))
                for t in (timesteps if k else full_timesteps):
                    latents = denoise_step(latents, self._model_call, t, self.scheduler, generator, model_kwargs)
                    if callback_on_step_end is not None:
                        wanted = callback_on_step_end_tensor_inputs
                        callback_kwargs = {"latents": latents} if "latents" in wanted else {}
                        latents = (callback_on_step_end(self, step, t, callback_kwargs) or {}).get("latents", latents)
                    step += 1
                    if bar is not None:
                        bar.update()
                outputs.append(latents[:, k:].clamp(-1, 1))
                cut_flags.append(inputs["cuts"][:, k:].clone())
        finally:
            if bar is not None:
                bar.close()
        frames = torch.cat(outputs, dim=1)
        all_cuts = torch.cat(cut_flags, dim=1)
        all_cuts[:, 0] = False  # frame 0 of the output starts the video, not a cut
        if output_type == "np":
            frames = to_uint8(frames)
        if not return_dict:
            return (frames,)
        return GeneratorOutput(frames=frames, cuts=all_cuts.cpu(), face_masks=layout_masks.cpu(),
                               chunk_starts=[c.start for c in plan], strategy=strategy)

    __call__ = generate

    @staticmethod
    def _count_chunks(num_frames, chunk_len, context_frames, keyframe=True):
        return len(plan_chunks(num_frames, chunk_len, context_frames, keyframe))

    @staticmethod
    def _layout(face_masks, layout, b, num_frames, size, device):
        if face_masks is None:
            if layout != "centred":
                raise ValueError(f"layout must be 'centred' when no face_masks are given, got {layout!r}")
            return centred_face_masks(num_frames, size)[None].expand(b, -1, -1, -1).to(device)
        m = face_masks.float()
        if m.ndim == 3:
            m = m[None].expand(b, -1, -1, -1)
        if m.ndim != 4 or m.shape[1] < num_frames:
            raise ValueError(f"face_masks must be (F, H, W) or (B, F, H, W) with F >= num_frames={num_frames}, "
                             f"got shape {tuple(face_masks.shape)}")
        if m.shape[-1] != size:
            m = F.interpolate(m, size=(size, size), mode="area")
        return m[:, :num_frames].to(device)
