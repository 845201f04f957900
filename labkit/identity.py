"""Identity tokens: from reference faces to the tokens the video model attends to.

A frozen face recognizer f turns a face into a unit-norm 512-d embedding. :class:`IdentityEncoder`
projects it to the model width with ``projection = nn.Linear(512, embed_dim)`` and lets a learned bank of
``num_tokens`` query vectors (``identity_bank``) cross-attend to it. Several references are averaged, as
ID-Animator averages its reference embeddings.

Why the keys are not just the one face embedding (the flaw in the article's sketch): with a single key,
softmax over one key is 1 for every query, so every query receives the same value ``W_v e``. The tokens
become ``bank_i + W_o W_v e``: they differ from each other only by the identity-independent bank, and the
identity moves all of them by the same vector. :func:`degenerate_bank_attention` shows it. The fix is the
Perceiver resampler of IP-Adapter-Plus: keys and values are the concatenation of the projected face
token(s) AND the latents (the bank itself), so each query weighs "the face" against "the other queries"
differently, and a feed-forward layer after the attention mixes the identity non-linearly into each token.

:class:`MultiCharacterIdentityBank` gives each character slot its own identity bank and a learned separator
token after its tokens; :func:`region_routing_mask` lets each character's face region attend only to its
own tokens, so bleed between characters can be compared across three modes ("concat", "routed", "shared").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from labkit.faces import EMBED_DIM, FaceRecognitionBackbone
from labkit.token_ops import merge_heads, multihead_sdpa, pool_to_grid, split_heads

__all__ = [
    "IdentityEncoder", "MultiCharacterIdentityBank", "BankCrossAttention", "bank_cross_attention",
    "degenerate_bank_attention", "region_routing_mask", "EMBEDDING_DIM", "TOKEN_DESIGNS",
]

#: Width of the recognizer's face embedding (InceptionResnetV1 and the synthfaces recognizer): the recognizer's
#: own constant, under the name this module has always exported.
EMBEDDING_DIM = EMBED_DIM


def bank_cross_attention(latents, context, to_q, to_k, to_v, to_out, num_heads: int):
    """Perceiver-resampler attention: the bank queries attend to [context tokens; the bank itself].

    latents: (B, T, D) the (normed) identity bank; context: (B, S, D) the (normed) projected face token(s).
    to_q/to_k/to_v/to_out: D -> D linear maps. Returns (B, T, D). This is exercise ``bank_attention``.
    """
    kv = torch.cat([context, latents], dim=1)
    return to_out(multihead_sdpa(to_q(latents), to_k(kv), to_v(kv), num_heads))


def degenerate_bank_attention(latents, context, to_q, to_k, to_v, to_out, num_heads: int):
    """The article's version, for comparison: keys/values are the face token(s) only.

    With ONE context token every attention weight is 1, so all T outputs are the same vector.
    Returns (output (B, T, D), attention weights (B, heads, T, S)).
    """
    q, k, v = (split_heads(t, num_heads) for t in (to_q(latents), to_k(context), to_v(context)))
    weights = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(dim=-1)
    return to_out(merge_heads(weights @ v)), weights


class BankCrossAttention(nn.Module):
    """One resampler layer: pre-norm bank cross-attention, then a pre-norm feed-forward, both residual.

    forward(latents (B, T, D), context (B, S, D)) -> (B, T, D).
    """

    def __init__(self, dim: int, num_heads: int = 8, ff_mult: int = 4):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm_context = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)
        self.ff = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, ff_mult * dim), nn.GELU(),
                                nn.Linear(ff_mult * dim, dim))

    def forward(self, latents, context):
        latents = latents + bank_cross_attention(self.norm_latents(latents), self.norm_context(context),
                                                 self.to_q, self.to_k, self.to_v, self.to_out, self.num_heads)
        return latents + self.ff(latents)


def _load_backbone(backbone):
    if isinstance(backbone, str):
        backbone = FaceRecognitionBackbone(weights=backbone)
    if backbone is not None:
        backbone.requires_grad_(False).eval()
    return backbone


def prepare_faces(images: torch.Tensor, backbone: nn.Module) -> torch.Tensor:
    """Images (N, 3, H, W), float in [-1, 1] or uint8, any size -> what ``backbone`` expects.

    A backbone that declares ``input_size`` (int or (h, w)) gets images resized to it; the kit's
    FaceRecognitionBackbone resizes internally and accepts any size.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"reference faces must be (N, 3, H, W), got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        images = images.float() / 127.5 - 1.0
    size = getattr(backbone, "input_size", None)
    if size is not None:
        size = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
    return images


#: How an IdentityEncoder makes its tokens: "resampler" (a learned bank of queries attends to the face, the
#: Perceiver resampler of IP-Adapter-Plus) or "face_only" (IP-Adapter-FaceID: one linear map from the face
#: embedding to all tokens, then LayerNorm; nothing in the tokens is independent of the face).
TOKEN_DESIGNS = ("resampler", "face_only")


class IdentityEncoder(nn.Module):
    """Reference faces -> identity tokens (B, num_tokens, embed_dim).

    design: one of :data:`TOKEN_DESIGNS`. A small video model trained with the learned bank learns to
    read the bank as a constant bias and to ignore the face (notebook 04 measures it); face-only tokens
    cannot be constant without throwing the face away, so the model that ships uses them.

    backbone: "synthfaces" / "vggface2" / a path (loads ``labkit.faces.FaceRecognitionBackbone``), any
    nn.Module mapping (N, 3, H, W) in [-1, 1] to (N, face_dim), or None (then only :meth:`encode_embeddings`
    works; the video model uses this and computes embeddings once, outside). The backbone is frozen and
    always in eval mode; it is registered as ``face_encoder``, so it moves with ``.to(device)``.
    face_dim: the width of the face embeddings (:data:`EMBEDDING_DIM`, 512).
    """

    def __init__(self, embed_dim: int = 768, num_tokens: int = 32, backbone="synthfaces", num_heads: int = 8,
                 design: str = "resampler", face_dim: int = EMBEDDING_DIM):
        super().__init__()
        if design not in TOKEN_DESIGNS:
            raise ValueError(f"design must be one of {TOKEN_DESIGNS}, got {design!r}")
        if not all(isinstance(n, int) and n >= 1 for n in (embed_dim, num_tokens, num_heads, face_dim)):
            raise ValueError(f"embed_dim, num_tokens, num_heads and face_dim must be ints >= 1, got "
                             f"embed_dim={embed_dim!r}, num_tokens={num_tokens!r}, num_heads={num_heads!r}, "
                             f"face_dim={face_dim!r}")
        self.embed_dim, self.num_tokens, self.design, self.face_dim = embed_dim, num_tokens, design, face_dim
        self.face_encoder = _load_backbone(backbone)
        if design == "face_only":
            self.to_tokens = nn.Linear(face_dim, num_tokens * embed_dim)
        else:
            self.projection = nn.Linear(face_dim, embed_dim)
            # Small init, as in IP-Adapter's resampler, so the bank starts near zero and the face dominates.
            self.identity_bank = nn.Parameter(torch.randn(num_tokens, embed_dim) / embed_dim**0.5)
            self.cross_attention = BankCrossAttention(embed_dim, num_heads)
        self.norm_out = nn.LayerNorm(embed_dim)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.face_encoder is not None:
            self.face_encoder.eval()  # frozen: BatchNorm statistics must not move
        return self

    @torch.no_grad()
    def embed_faces(self, reference_frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) or (B, R, 3, H, W) -> face embeddings (B, face_dim) or (B, R, face_dim), one backbone call."""
        if self.face_encoder is None:
            raise RuntimeError("this IdentityEncoder has no backbone (backbone=None): use encode_embeddings")
        if not torch.is_tensor(reference_frames):
            raise TypeError(f"reference_frames must be a tensor (B, 3, H, W) or (B, R, 3, H, W), "
                            f"got {type(reference_frames).__name__}")
        if reference_frames.dim() not in (4, 5):
            raise ValueError(f"reference_frames must be (B, 3, H, W) or (B, R, 3, H, W), "
                             f"got shape {tuple(reference_frames.shape)}")
        if reference_frames.shape[0] == 0 or (reference_frames.dim() == 5 and reference_frames.shape[1] == 0):
            raise ValueError(f"no reference faces: got shape {tuple(reference_frames.shape)}")
        if min(reference_frames.shape[-2:]) == 0 or reference_frames.numel() > 2**29:  # before reshape copies it
            raise ValueError(f"reference_frames of shape {tuple(reference_frames.shape)} have no pixels or too many")
        lead = reference_frames.shape[:-3]
        flat = prepare_faces(reference_frames.reshape(-1, *reference_frames.shape[-3:]), self.face_encoder)
        return self.face_encoder(flat).reshape(*lead, -1)

    def encode_embeddings(self, face_embeddings: torch.Tensor) -> torch.Tensor:
        """Precomputed embeddings (B, face_dim) or (B, R, face_dim) -> identity tokens (B, num_tokens, embed_dim).

        R references are averaged first (their embeddings, as ID-Animator does).
        """
        e = face_embeddings
        if not torch.is_tensor(e):
            raise TypeError(f"face_embeddings must be a tensor (B, {self.face_dim}) or (B, R, {self.face_dim}), "
                            f"got {type(e).__name__}")
        if e.dim() not in (2, 3) or e.shape[-1] != self.face_dim:
            raise ValueError(f"face_embeddings must be (B, {self.face_dim}) or (B, R, {self.face_dim}), "
                             f"got shape {tuple(e.shape)}")
        if e.dim() == 3:
            if e.shape[1] == 0:
                raise ValueError(f"no reference faces: got face_embeddings of shape {tuple(e.shape)}")
            e = e.mean(dim=1)
        if self.design == "face_only":
            tokens = self.to_tokens(e.to(self.to_tokens.weight.dtype))
            return self.norm_out(rearrange(tokens, "b (t d) -> b t d", t=self.num_tokens))
        context = rearrange(self.projection(e.to(self.projection.weight.dtype)), "b d -> b 1 d")
        latents = repeat(self.identity_bank, "t d -> b t d", b=e.shape[0])
        return self.norm_out(self.cross_attention(latents, context))

    def encode_identity(self, reference_frames: torch.Tensor) -> torch.Tensor:
        """Reference faces (B, 3, H, W) or (B, R, 3, H, W), any size -> tokens (B, num_tokens, embed_dim)."""
        return self.encode_embeddings(self.embed_faces(reference_frames))

    forward = encode_identity


def region_routing_mask(character_masks: torch.Tensor, token_character: torch.Tensor,
                        grid: tuple[int, int] | None = None, threshold: float = 0.5) -> torch.Tensor:
    """Per-character face masks -> bool identity attention mask (B, F, N, L), True = may attend.

    character_masks: (B, F, C, H, W) at pixel resolution or (B, F, C, N) at token resolution.
    token_character: (L,) long, the character of each identity token (from ``encode_multiple``).
    A query token belongs to character c when c's mask covers at least ``threshold`` of its patch; it may
    then attend only to c's tokens. Tokens in no face region get all-False rows (the attention block gives
    them a zero identity update).
    """
    if character_masks.dim() not in (4, 5):
        raise ValueError(f"character_masks must be (B, F, C, H, W) or (B, F, C, N), "
                         f"got shape {tuple(character_masks.shape)}")
    num_chars = character_masks.shape[2]
    if token_character.numel() and int(token_character.max()) >= num_chars:
        raise ValueError(f"token_character refers to character {int(token_character.max())} but "
                         f"character_masks has C={num_chars}: shape {tuple(character_masks.shape)}")
    masks = character_masks.float()
    if masks.dim() == 5:
        if grid is None:
            raise ValueError("pixel-resolution character_masks need grid=(h, w) of the attention tokens")
        masks = pool_to_grid(masks, tuple(grid))
    in_region = rearrange(masks >= threshold, "b f c n -> b f n c")
    return in_region[..., token_character.to(in_region.device)]


class MultiCharacterIdentityBank(nn.Module):
    """Several characters -> one sequence of identity tokens, with the character of each token.

    Each character slot c < max_characters has its own :class:`IdentityEncoder` head (projection, bank,
    resampler) and a learned separator token after its tokens. The frozen backbone is shared and called
    once for all characters. Modes, so that bleed can be compared:

    - "concat": per-character banks + separators; every face token may attend to every identity token;
    - "routed": the same tokens; pass :meth:`attention_mask` to the attention block so that each character's
      face region attends only to its own tokens;
    - "shared": the baseline: one bank for every character, no separators, no routing.
    """

    MODES = ("concat", "routed", "shared")

    def __init__(self, max_characters: int = 8, embed_dim: int = 768, num_tokens: int = 32, backbone="synthfaces",
                 num_heads: int = 8, mode: str = "concat"):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.max_characters, self.embed_dim, self.num_tokens, self.mode = max_characters, embed_dim, num_tokens, mode
        self.face_encoder = _load_backbone(backbone)
        self.banks = nn.ModuleList(IdentityEncoder(embed_dim, num_tokens, backbone=None, num_heads=num_heads)
                                   for _ in range(max_characters))
        self.character_separator = nn.Parameter(torch.randn(max_characters, embed_dim) / embed_dim**0.5)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.face_encoder is not None:
            self.face_encoder.eval()
        return self

    def _embed(self, character_references):
        """List of C tensors (B, [R,] 3, H, W) or a tensor (B, C, R, 3, H, W) -> mean embeddings (B, C, 512).

        The backbone is called once for every reference of every character.
        """
        if isinstance(character_references, torch.Tensor):
            if character_references.dim() != 6:
                raise ValueError(f"character_references tensor must be (B, C, R, 3, H, W), "
                                 f"got shape {tuple(character_references.shape)}")
            character_references = list(character_references.unbind(dim=1))
        refs = [r if r.dim() == 5 else r.unsqueeze(1) for r in character_references]
        self._check_count(len(refs), [tuple(r.shape) for r in refs])
        for r in refs:
            if r.dim() != 5 or r.shape[2] != 3 or r.shape[0] != refs[0].shape[0] or r.shape[1] == 0:
                raise ValueError(f"each character's references must be (B, 3, H, W) or (B, R>=1, 3, H, W) with "
                                 f"one B; got shapes {[tuple(x.shape) for x in refs]}")
        if self.face_encoder is None:
            raise RuntimeError("this bank has no backbone (backbone=None): use encode_multiple_embeddings")
        size = tuple(refs[0].shape[-2:])
        flat = [rearrange(r, "b r ch h w -> (b r) ch h w") for r in refs]
        flat = [x if tuple(x.shape[-2:]) == size else F.interpolate(x, size=size, mode="bilinear", antialias=True)
                for x in flat]
        with torch.no_grad():
            emb = self.face_encoder(prepare_faces(torch.cat(flat), self.face_encoder))
        chunks = emb.split([x.shape[0] for x in flat])
        return torch.stack([rearrange(e, "(b r) d -> b r d", b=refs[0].shape[0]).mean(dim=1) for e in chunks],
                           dim=1)

    def _check_count(self, num_chars, shape):
        if num_chars == 0:
            raise ValueError(f"character_references is empty (shape {shape}): give at least one character")
        if num_chars > self.max_characters:
            raise ValueError(f"{num_chars} characters but max_characters={self.max_characters} "
                             f"(references of shape {shape})")

    def encode_multiple_embeddings(self, embeddings: torch.Tensor, mode: str | None = None):
        """Embeddings (B, C, 512) or (B, C, R, 512) -> (tokens (B, L, D), token_character (L,) long)."""
        mode = mode or self.mode
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        if embeddings.dim() not in (3, 4) or embeddings.shape[-1] != EMBEDDING_DIM:
            raise ValueError(f"embeddings must be (B, C, {EMBEDDING_DIM}) or (B, C, R, {EMBEDDING_DIM}), "
                             f"got shape {tuple(embeddings.shape)}")
        self._check_count(embeddings.shape[1], tuple(embeddings.shape))
        tokens, owner = [], []
        for c in range(embeddings.shape[1]):
            bank = self.banks[0 if mode == "shared" else c]
            char_tokens = bank.encode_embeddings(embeddings[:, c])
            if mode != "shared":
                sep = repeat(self.character_separator[c], "d -> b 1 d", b=embeddings.shape[0])
                char_tokens = torch.cat([char_tokens, sep], dim=1)
            tokens.append(char_tokens)
            owner.append(torch.full((char_tokens.shape[1],), c, dtype=torch.long))
        return torch.cat(tokens, dim=1), torch.cat(owner).to(embeddings.device)

    def encode_multiple(self, character_references, mode: str | None = None):
        """References of C characters -> (tokens (B, L, embed_dim), token_character (L,) long).

        character_references: a list of C tensors (B, 3, H, W) or (B, R, 3, H, W), or one tensor
        (B, C, R, 3, H, W) (``SceneBatch.references``). Each character's R references are averaged.
        L = C * (num_tokens + 1) with separators, C * num_tokens in "shared" mode; a separator belongs
        to the character it follows.
        """
        return self.encode_multiple_embeddings(self._embed(character_references), mode)

    def attention_mask(self, character_masks, token_character, grid=None, mode: str | None = None):
        """The identity attention mask for the attention block in this mode: routing mask or None."""
        if (mode or self.mode) != "routed":
            return None
        return region_routing_mask(character_masks, token_character, grid)
