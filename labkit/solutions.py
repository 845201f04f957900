"""Worked solutions of the exercises, kept apart from the notebooks: ``labkit.exercises.solution(name)`` prints one.

Each ``my_<name>`` is written the way a learner would write it in the notebook cell (the notebook holds a stub
of the same name that raises NotImplementedError). ``solved_notebook`` turns a learner's notebook into the
solved copy that CI runs: every stub is replaced with the solution below.
"""

from __future__ import annotations

import inspect
import re

import torch
from einops import rearrange


# ---------------------------------------------------------------------------------------------- 01_drift
def my_denoise_step(x_t, model, t, scheduler, generator=None, model_kwargs=None):
    out = model(x_t, t, **(model_kwargs or {}))
    prediction = out.sample if hasattr(out, "sample") else out  # diffusers models wrap it, plain ones do not
    return scheduler.step(prediction, t, x_t, generator=generator).prev_sample


# ------------------------------------------------------------------------------------- 02_synthetic_faces
def my_box_to_mask(box, height, width):
    x1, y1, x2, y2 = (float(v) for v in box)
    cols = torch.arange(width) + 0.5    # pixel centres along x
    rows = torch.arange(height) + 0.5   # pixel centres along y
    inside_x = (cols >= x1) & (cols < x2)
    inside_y = (rows >= y1) & (rows < y2)
    return (inside_y[:, None] & inside_x[None, :]).float()


# ------------------------------------------------------------------------------------- 03_face_embeddings
def my_cosine_similarity_matrix(a, b, eps=1e-8):
    a = a / a.norm(dim=1, keepdim=True).clamp_min(eps)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(eps)
    return a @ b.T


# ------------------------------------------------------------------------------------ 04_identity_encoder
def my_bank_attention(latents, context, to_q, to_k, to_v, to_out, num_heads):
    kv = torch.cat([context, latents], dim=1)       # keys and values: the face token(s) and the bank
    q, k, v = to_q(latents), to_k(kv), to_v(kv)     # queries: the bank only
    q, k, v = (rearrange(t, "b l (h c) -> b h l c", h=num_heads) for t in (q, k, v))
    weights = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(dim=-1)
    return to_out(rearrange(weights @ v, "b h l c -> b l (h c)"))


# ---------------------------------------------------------------------------------- 05_identity_attention
def my_temporal_identity(x, temporal_attention, identity_attention, token_masks, identity_strength):
    b = x.shape[0]
    h = rearrange(x, "b f n d -> (b n) f d")        # each patch's frames form one sequence
    h = h + temporal_attention(h)
    x = rearrange(h, "(b n) f d -> b f n d", b=b)
    return x + identity_strength * token_masks[..., None] * identity_attention(x)


# ------------------------------------------------------------------------------- 06_reference_conditioning
def my_mean_reference_embedding(embeddings):
    mean = embeddings.mean(dim=-2)                  # the reference axis: (R, D) -> (D,), (B, R, D) -> (B, D)
    return mean / mean.norm(dim=-1, keepdim=True)


# ------------------------------------------------------------------------------------- 07_identity_losses
def my_identity_loss(generated_video, reference_faces, face_encoder, temporal_weight=0.5):
    b, f = generated_video.shape[:2]
    images = torch.cat([rearrange(generated_video, "b f c h w -> (b f) c h w"),
                        rearrange(reference_faces, "b r c h w -> (b r) c h w")])
    emb = face_encoder(images)                      # one call for every frame and every reference
    frames = rearrange(emb[: b * f], "(b f) d -> b f d", b=b)
    refs = rearrange(emb[b * f:], "(b r) d -> b r d", b=b)
    reference = (frames - refs.mean(dim=1, keepdim=True)).square().sum(dim=-1).mean()
    temporal = (frames[:, 1:] - frames[:, :-1]).square().sum(dim=-1).mean()
    return reference + temporal_weight * temporal


# ------------------------------------------------------------------------------------------- 08_training
def my_v_target(x0, noise, alphas_cumprod, t):
    ab = alphas_cumprod[t].reshape(-1, *[1] * (x0.ndim - 1))  # (B,) -> (B, 1, 1, ...)
    return ab.sqrt() * noise - (1 - ab).sqrt() * x0


# ------------------------------------------------------------------------------------ 09_multi_character
def my_region_routing_mask(character_masks, token_character, threshold=0.5):
    in_region = (character_masks >= threshold).permute(0, 1, 3, 2)  # (B, F, N, C), bool
    return in_region[..., token_character]                           # one column per identity token


# ------------------------------------------------------------------------------------------ 10_drift_lab
def my_chunk_means(scores, chunk_starts):
    bounds = list(chunk_starts) + [scores.shape[1]]
    return torch.stack([scores[:, a:b].mean(dim=1) for a, b in zip(bounds[:-1], bounds[1:]) if b > a], dim=1)


# ------------------------------------------------------------------------------------------ solved copies
#: A stub in a learner's notebook: ``def my_<name>(...):`` whose body ends with ``raise NotImplementedError(...)``.
STUB = re.compile(r"^def (my_\w+)\(.*?\n    raise NotImplementedError\([^\n]*\)\n", re.S | re.M)


def solve_source(source: str) -> tuple[str, list[str]]:
    """Replace every exercise stub in a cell's source with its worked solution; returns (source, exercise names)."""
    names = []

    def swap(match):
        func = globals().get(match.group(1))
        if func is None:
            return match.group(0)
        names.append(match.group(1)[3:])
        return inspect.getsource(func)

    return STUB.sub(swap, source if source.endswith("\n") else source + "\n"), names


def solved_notebook(nb):
    """A copy of the nbformat notebook ``nb`` with every exercise stub replaced by its solution; and the names."""
    import copy

    nb, names = copy.deepcopy(nb), []
    for cell in nb.cells:
        if cell.cell_type == "code" and "NotImplementedError" in cell.source:
            cell.source, found = solve_source(cell.source)
            names += found
    return nb, names
