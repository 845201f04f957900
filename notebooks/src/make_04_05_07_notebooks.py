"""Write notebooks 04_identity_encoder, 05_identity_attention and 07_identity_losses (no outputs) with nbformat.

    .venv/bin/python notebooks/src/make_04_05_07_notebooks.py
"""

from nbwriter import DEVICE, SETUP, write_notebook

NB04 = [
("md", r"""
# 04 · The identity encoder: from a face to identity tokens

The video model cannot look at a reference photo directly; it attends to *tokens*. The identity encoder
turns reference faces into a small set of identity tokens:

`reference faces -> frozen recognizer f (512-d) -> Linear(512, embed_dim) -> a learned bank of query
tokens cross-attends to it -> identity tokens (B, num_tokens, embed_dim)`

The same pattern is the Perceiver resampler of IP-Adapter-Plus, and appears in InstantID and ConsisID.

In this notebook you will be able to:
- embed synthetic faces with the frozen recognizer and read their cosine similarities;
- see why the article's sketch, cross-attention from the bank to ONE face embedding, is degenerate;
- write the resampler's bank cross-attention yourself and check it with `labkit.exercises.check`;
- average several references, and measure how much closer the identity tokens of one face under new
  poses are than those of different faces.
"""),
("code", SETUP),
("code", DEVICE),
("md", r"""
## The frozen recognizer f

`labkit.faces.FaceRecognitionBackbone` is a small recognizer trained on the synthetic faces (notebook 03).
It takes images in [-1, 1] of any size (it resizes internally) and returns unit-norm 512-d embeddings, so
the cosine similarity of two faces is a dot product. It is frozen: the identity encoder never trains it.
"""),
("code", r"""
import torch
import torch.nn.functional as F

from labkit import synthfaces
from labkit.common import figure_path, show_images
from labkit.faces import FaceRecognitionBackbone

backbone = FaceRecognitionBackbone("synthfaces").to(device)
ids = synthfaces.test_ids(4)  # held-out identities: the recognizer never saw them
gen = torch.Generator().manual_seed(0)
view_a, _ = synthfaces.render_faces(ids, size=64, generator=gen)
view_b, _ = synthfaces.render_faces(ids, size=64, generator=gen)  # same people, new pose and lighting
fig = show_images(torch.cat([view_a, view_b]), titles=[f"id {i}, view a" for i in ids.tolist()] +
            [f"id {i}, view b" for i in ids.tolist()], ncols=4)
"""),
("code", r"""
with torch.no_grad():
    ea, eb = backbone(view_a.to(device)), backbone(view_b.to(device))
print("embedding shape", tuple(ea.shape), " norms", ea.norm(dim=-1).round(decimals=3).tolist())
print("cosine(view a, view b), rows = view a, cols = view b:")
print((ea @ eb.T).cpu().numpy().round(2))
"""),
("md", r"""
The diagonal (same identity, different view) should be clearly higher than the rest.

## The article's sketch, and why it is degenerate

The article writes the encoder as cross-attention with `query = identity_bank` (32 learned tokens) and
`key = value = projection(face_embedding)`: a single key. Softmax over one key is 1 for every query, so
**every query receives the same value**. The output token i is `bank_i + W_o W_v e`: the identity moves all
32 tokens by the same vector, and the tokens differ from each other only by the part that does not depend
on the face. 32 tokens, one direction of identity.

Let's see it with the weights of a real `IdentityEncoder` layer.
"""),
("code", r"""
from einops import repeat

from labkit.identity import IdentityEncoder, bank_cross_attention, degenerate_bank_attention

embed_dim, num_tokens = 128, 8
torch.manual_seed(0)
encoder = IdentityEncoder(embed_dim=embed_dim, num_tokens=num_tokens, backbone=backbone, num_heads=4).to(device)
layer = encoder.cross_attention
maps = (layer.to_q, layer.to_k, layer.to_v, layer.to_out)

with torch.no_grad():
    # as inside the layer: project the face embeddings, then layer-norm the face token(s) and the bank
    faces = layer.norm_context(encoder.projection(torch.cat([ea, eb]))[:, None])   # (8, 1, D): one key per face
    bank = layer.norm_latents(repeat(encoder.identity_bank, "t d -> b t d", b=len(faces)))
    out, weights = degenerate_bank_attention(bank, faces, *maps, num_heads=layer.num_heads)
    good = bank_cross_attention(bank, faces, *maps, num_heads=layer.num_heads)
"""),
("code", r"""
def spread(move):
    # how differently the tokens move, relative to how far they move: 0 = all tokens move alike
    return ((move - move.mean(dim=0)).norm(dim=-1).mean() / move.norm(dim=-1).mean()).item()


print("article's attention weights: min", weights.min().item(), "max", weights.max().item())
# how each of the tokens moves when the face changes from identity 0 to identity 1
print(f"article:   spread of that move across the {num_tokens} tokens {spread(out[0] - out[1]):.3f}")
print(f"resampler: spread of that move across the {num_tokens} tokens {spread(good[0] - good[1]):.3f}")
"""),
("md", r"""
## The fix: the Perceiver resampler

IP-Adapter-Plus's resampler lets the bank queries attend to the **concatenation** of the face token(s) and
the latents (the bank itself): `keys = values = [face; bank]`. Now each query weighs "the face" against
"the other queries" with its own weights, so different tokens take different amounts and mixtures of the
identity. A feed-forward layer after the attention then mixes the identity into each token non-linearly.
(Using several face tokens, e.g. a CLIP feature map, is the other way out; our recognizer gives one vector.)

## Exercise: the bank cross-attention

Write `my_bank_attention(latents, context, to_q, to_k, to_v, to_out, num_heads)`:

- `latents`: `(B, T, D)`, the bank (already layer-normed); `context`: `(B, S, D)`, the projected face
  token(s) (already layer-normed); `to_q`, `to_k`, `to_v`, `to_out`: `D -> D` linear maps;
- queries from the latents; keys and values from `[context; latents]` along the token axis;
- `num_heads` heads: split channels as `"b l (h c) -> b h l c"`, scaled dot-product attention, merge back,
  then `to_out`. Return `(B, T, D)`.

The cell below is a stub: **replace `raise NotImplementedError(...)` with your code** and run the check. It
prints PASS or FAIL for each case; until every case passes, the rest of the notebook uses labkit's own
implementation, so the notebook runs either way. After a failed check, `hint("bank_attention")`
explains what the failing cases mean (ask again for a more specific hint), and `solution("bank_attention")` shows a
worked solution.
"""),
("code", r"""
from einops import rearrange

from labkit.exercises import check, hint, solution


def my_bank_attention(latents, context, to_q, to_k, to_v, to_out, num_heads):
    # TODO (exercise): queries from the bank; keys and values from the face token(s) and the bank
    raise NotImplementedError("exercise bank_attention: write this function, then run the cell")


# yours once every case passes, labkit's own until then: the notebook runs either way
my_bank_attention = check("bank_attention", my_bank_attention).function
"""),
("md", r"""
## Several references

A single photo carries its pose and lighting with it. ID-Animator averages the embeddings of several
references, so what the references share (the identity) stays and what they don't (pose, light) shrinks.
`encode_identity` accepts `(B, 3, H, W)` or `(B, R, 3, H, W)` and averages the R embeddings before the
projection.
"""),
("code", r"""
refs = torch.stack([view_a, view_b], dim=1).to(device)   # (4 identities, R=2, 3, 64, 64)
with torch.no_grad():
    tokens = encoder.encode_identity(refs)
    by_hand = encoder.encode_embeddings(torch.stack([ea, eb], dim=1).mean(dim=1))
print("tokens", tuple(tokens.shape), f"  max |encode_identity - by hand| = {(tokens - by_hand).abs().max():.1e}")
"""),
("md", r"""
## Measured: do identity tokens keep identities apart?

The encoder is untrained here: its projection and bank are random. Still, its tokens are a smooth
function of the recognizer's embedding, so they should inherit its geometry. We render held-out identities
twice (new pose, expression, lighting each time) and compare the cosine similarity of the flattened
identity tokens for the **same** identity against **different** identities, next to the same measure on
the raw 512-d embeddings.

Every token also carries the learned bank, which is the same for every face. To see the part that depends
on the face, we also compare the tokens after subtracting their mean over all the faces ("centred").
"""),
("code", r"""
n_ids = 12 if QUICK else 40
ids = synthfaces.test_ids(n_ids, offset=100)
gen = torch.Generator().manual_seed(1)
faces_a, _ = synthfaces.render_faces(ids, size=64, generator=gen)
faces_b, _ = synthfaces.render_faces(ids, size=64, generator=gen)
with torch.no_grad():
    emb_a, emb_b = backbone(faces_a.to(device)), backbone(faces_b.to(device))
    tok_a = F.normalize(encoder.encode_embeddings(emb_a).flatten(1), dim=-1)
    tok_b = F.normalize(encoder.encode_embeddings(emb_b).flatten(1), dim=-1)

mean_token = torch.cat([tok_a, tok_b]).mean(dim=0)
centred_a, centred_b = F.normalize(tok_a - mean_token, dim=-1), F.normalize(tok_b - mean_token, dim=-1)
eye = torch.eye(n_ids, dtype=torch.bool)
results = {}
pairs = {"recognizer embedding": (emb_a, emb_b), "identity tokens": (tok_a, tok_b),
         "identity tokens, centred": (centred_a, centred_b)}
for name, (a, b) in pairs.items():
    sim = (a @ b.T).cpu()
    results[name] = (sim[eye], sim[~eye])
    found = (sim.argmax(dim=1) == torch.arange(n_ids)).float().mean()  # is the nearest face the same person?
    print(f"{name:>24}: same identity {sim[eye].mean():.3f}   different {sim[~eye].mean():.3f}   "
          f"gap {sim[eye].mean() - sim[~eye].mean():.3f}   nearest is the same identity {found:.0%}")
"""),
("code", r"""
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
for ax, (name, (same, different)) in zip(axes, results.items()):
    bins = torch.linspace(min(same.min(), different.min()).item(), 1.0, 30).numpy()
    ax.hist(different.numpy(), bins=bins, alpha=0.6, density=True, label="different identities")
    ax.hist(same.numpy(), bins=bins, alpha=0.6, density=True, label="same identity, new view")
    ax.set_title(name)
    ax.set_xlabel("cosine similarity")
axes[0].legend(fontsize=8)
fig.tight_layout()
fig.savefig(figure_path("04_identity_token_similarity.png"), dpi=80)
"""),
("md", r"""
Read the three panels left to right. The raw identity tokens keep the recognizer's order (same identity
above different identities) but are squeezed near 1: most of every token is the learned bank and the layer
norms, which are the same for every face. Centred, the gap between same and different identity is about as
large as the recognizer's own: the untrained encoder passes the identity through almost unchanged, and
hardly adds to it. Training the encoder inside the video model (notebook 08) decides what the tokens spend
their width on.
"""),
("md", r"""
## What training does to the tokens: learned bank against face-only tokens

Untrained, both designs pass the face through. What matters is what a video model *learns* to do with
them. The learned bank offers the model an easy shortcut: a set of tokens that is the same for every face,
which it can read as extra "register" tokens, a constant bias, instead of the face. Nothing stops the
resampler from drifting there, and in this course's measurements a small model trained with it ends up with
tokens that differ between faces by well under 1% of their size.

The alternative the course's model uses is IP-Adapter-FaceID's: **face-only tokens**, one linear map from the
512-d embedding to all T tokens, then LayerNorm (`IdentityEncoder(design="face_only")`). No part of them is
independent of the face, so they cannot become a constant without throwing the face away.

Below we train the same tiny model twice, on the same single-frame batches, once per design, and measure
with the training monitor (`labkit.train.monitor`):

- **token spread**: the mean distance between two faces' tokens, relative to the tokens' size (0 = every
  face gets the same tokens);
- **swap sensitivity**: how much the model's prediction on a noisy frame changes when another face's tokens
  are given (0 = the model ignores which face it is given).
"""),
("code", r"""
from labkit.train import compare_token_designs

probe_steps = 40 if QUICK else 150
probe = compare_token_designs(steps=probe_steps)
for design, (first, last) in probe.items():
    print(f"{design:>10}: token spread {first['token_spread']:.3f} -> {last['token_spread']:.3f}   "
          f"swap sensitivity {first['swap_sensitivity']:.4f} -> {last['swap_sensitivity']:.4f}   "
          f"(after {last['step']} steps)")
"""),
("md", r"""
Compare the two rows at the end of training: how far did each design's spread fall, and how strongly does
the model react to a swapped face? The run is short (a couple of minutes on a CPU); the shipped model's
training log (`data/identity_video_dit/training.json`) has the same two figures over its whole run.

**Question:** averaging R references shrinks the nuisance part of the embedding. How would you measure
whether 3 references give tokens closer to the identity than 1 reference, and would you expect the gain from
5 references over 3 to be as large as from 3 over 1?
"""),
]


NB05 = [
("md", r"""
# 05 · Identity-aware attention: spatial, temporal, identity

A video transformer block sees a clip as tokens with layout `b f n d` (batch, frames, tokens per frame,
channels). The identity-aware block of this course runs three attentions in a row:

1. **spatial**: the tokens of one frame look at each other;
2. **temporal**: each grid position looks at itself in every frame, which is how a face stays the same
   from frame to frame;
3. **identity**: every token looks at the identity tokens from notebook 04, and the result is kept only
   inside the face mask, scaled by `identity_strength`.

In this notebook you will be able to:
- write the two `einops` rearranges that move between spatial and temporal layouts, and see what goes
  wrong with a plain `reshape`;
- write the temporal step and the masked identity branch yourself, and have `labkit.exercises.check` test it;
- check `labkit`'s `F.scaled_dot_product_attention` block against the same block written with
  `nn.MultiheadAttention`, and time both;
- show with attention maps that, with face masks, the identity branch leaves the background untouched.
"""),
("code", SETUP),
("code", DEVICE),
("md", r"""
## A clip as tokens

We render a short clip of one synthetic character with `labkit.synthfaces`. The video model cuts each
64x64 frame into 4x4 patches, so one frame becomes a 16x16 grid of N = 256 tokens. Here a fixed random
linear map plays the patch embedding; the real model learns it.
"""),
("code", r"""
import torch
from einops import rearrange

from labkit import synthfaces
from labkit.common import figure_path, show_images

num_frames = 4 if QUICK else 8
clip = synthfaces.make_clips(synthfaces.train_ids(1, offset=7), num_frames=num_frames, size=64, num_refs=3,
                             generator=torch.Generator().manual_seed(0))
frames, masks = clip.frames, clip.masks  # (1, F, 3, 64, 64) in [-1, 1], (1, F, 64, 64) in [0, 1]
print("frames", tuple(frames.shape), " masks", tuple(masks.shape))
fig = show_images(torch.cat([frames[0], masks[0, :, None].expand(-1, 3, -1, -1) * 2 - 1]), ncols=num_frames)
"""),
("code", r"""
dim, patch = 64, 4
torch.manual_seed(0)
patch_embed = torch.nn.Linear(3 * patch * patch, dim)
with torch.no_grad():
    x = patch_embed(rearrange(frames, "b f c (h p) (w q) -> b f (h w) (c p q)", p=patch, q=patch))
grid = (64 // patch, 64 // patch)
print("tokens x:", tuple(x.shape), "= (batch, frames, tokens per frame, channels), grid", grid)
"""),
("md", r"""
## Spatial and temporal layouts

Spatial attention wants every frame as its own sequence: `b f n d -> (b f) n d`. Temporal attention wants
every grid position as its own sequence over the frames: `b f n d -> (b n) f d`. `einops` names each axis,
so the pattern says exactly which axes are merged.

A plain `x.reshape(b * n, f, d)` has the right shape but the wrong content: it reads the memory in
`b f n d` order and cuts it into pieces of length f, so a "temporal" sequence mixes tokens of one frame.
Let's label every token with its (frame, token) index and look.
"""),
("code", r"""
b, f, n = 1, 3, 4
frame_of = torch.arange(f)[None, :, None].expand(b, f, n)   # (b, f, n): which frame a token is in
token_of = torch.arange(n)[None, None, :].expand(b, f, n)   # (b, f, n): which grid position
labels = torch.stack([frame_of, token_of], dim=-1)          # (b, f, n, 2)

right = rearrange(labels, "b f n two -> (b n) f two")
wrong = labels.reshape(b * n, f, 2)
print("rearrange, sequence for grid position 1 (frame, token):", right[1].tolist())
print("reshape,   'sequence' number 1               (frame, token):", wrong[1].tolist())
"""),
("md", r"""
With `rearrange`, sequence 1 is token 1 in frames 0, 1, 2: the same place followed through time. With
`reshape`, sequence 1 jumps across tokens and frames. The shapes agree, so nothing crashes: only a test
on the values catches it.

## Why the mask gates the output, not the queries

The identity branch is cross-attention: queries from the video tokens, keys and values from the identity
tokens (with their own projections `to_k_ip` and `to_v_ip`, as in IP-Adapter). Multiplying the *queries*
by the mask does not switch a background token off: a zero query gives uniform attention weights (softmax
of zeros), and the token still receives the mean of the values. Multiplying the *output* by the mask does:

`x = x + identity_strength * mask * identity_attention(x)`

Masks can be soft (values between 0 and 1) or binary, and at pixel or token resolution. The block
area-averages pixel masks onto its token grid, so each token's gate is the fraction of its patch that is
face.
"""),
("code", r"""
from labkit.attention import masks_to_tokens

token_masks = masks_to_tokens(masks, num_frames, grid)   # (1, F, 256), soft at the edge of the face
print("token masks", tuple(token_masks.shape), " values between", token_masks.min().item(), "and",
      token_masks.max().item())
"""),
("md", r"""
## Exercise: the temporal step and the masked identity branch

Write the end of the block. You get `x` with layout `b f n d` (after spatial attention) and two functions:

- `temporal_attention(h)`: maps `(batch, frames, d) -> (batch, frames, d)` (its layer norm is inside, no
  residual)
- `identity_attention(x)`: maps `(b, f, n, d) -> (b, f, n, d)`, the identity branch before gating;

plus `token_masks` `(b, f, n)` and `identity_strength` `(b, 1, 1, 1)`. Return the new `x` `(b, f, n, d)`:

1. rearrange to the temporal layout, add the temporal attention as a residual, rearrange back;
2. add the identity branch, gated by the mask and scaled by the strength.

The cell below is a stub: **replace `raise NotImplementedError(...)` with your code** and run the check. It
prints PASS or FAIL for each case; until every case passes, the rest of the notebook uses labkit's own
implementation, so the notebook runs either way. After a failed check, `hint("temporal_identity")`
explains what the failing cases mean (ask again for a more specific hint), and `solution("temporal_identity")` shows a
worked solution.
"""),
("code", r"""
from labkit.exercises import check, hint, solution


def my_temporal_identity(x, temporal_attention, identity_attention, token_masks, identity_strength):
    # TODO (exercise): temporal residual along the frames of each patch, then the gated identity branch
    raise NotImplementedError("exercise temporal_identity: write this function, then run the cell")


# yours once every case passes, labkit's own until then: the notebook runs either way
my_temporal_identity = check("temporal_identity", my_temporal_identity).function
"""),
("md", r"""
## The whole block, checked against `nn.MultiheadAttention`

`labkit.attention.IdentityAwareAttention` is the block: pre-norm and residual around each attention, all
three computed by `F.scaled_dot_product_attention`. The article the course follows writes it with
`nn.MultiheadAttention`. `MultiheadReferenceAttention` is that version; we copy the weights across and
compare the outputs. Expect a difference around 1e-6 (float rounding), far below 1e-5.
"""),
("code", r"""
from labkit.attention import IdentityAwareAttention, MultiheadReferenceAttention

block = IdentityAwareAttention(dim, num_heads=4)
reference = MultiheadReferenceAttention.from_block(block)
identity_tokens = torch.randn(1, 8, dim)
with torch.no_grad():
    ours = block(x, identity_tokens, masks, identity_strength=0.8)
    theirs = reference(x, identity_tokens, masks, identity_strength=0.8)
print(f"max |SDPA block - MultiheadAttention block| = {(ours - theirs).abs().max().item():.2e}  (expect < 1e-5)")
"""),
("md", r"""
Now time forward + backward at one realistic size: 8 frames of 16x16 tokens, 256 channels (the same
command runs from a terminal: `python -m labkit.attention`).
"""),
("code", r"""
from labkit.attention import benchmark

timing = benchmark(frames=8, side=16, dim=256, repeats=2 if QUICK else 5)
print(f"SDPA block: {timing['sdpa_s'] * 1000:.0f} ms   nn.MultiheadAttention block: "
      f"{timing['multihead_s'] * 1000:.0f} ms   ratio {timing['speedup']:.2f}x")
"""),
("md", r"""
## Measured: where does the identity branch act?

We encode the character's three reference images into identity tokens with the `IdentityEncoder` of
notebook 04 (untrained here: we only look at *where* the branch acts, not what it writes). Then we run the
block twice with `record_identity_attention = True`, once with the face masks and once without, and plot:

- the identity attention of every token to its most-attended identity token (every row of attention weights
  sums to 1, background included)
- the size of the identity update `||identity_strength * mask * identity_attention(x)||` per token.
"""),
("code", r"""
from labkit.identity import IdentityEncoder

encoder = IdentityEncoder(embed_dim=dim, num_tokens=8, backbone="synthfaces", num_heads=4)
with torch.no_grad():
    identity_tokens = encoder.encode_identity(clip.references)  # (1, 8, dim), R=3 references averaged
block.record_identity_attention = True
updates, attention = {}, {}
for name, m in [("with face masks", masks), ("without masks", None)]:
    with torch.no_grad():
        block(x, identity_tokens, m, identity_strength=0.8)
    updates[name] = block.last_identity_update.norm(dim=-1)[0]   # (F, N)
    attention[name] = block.last_identity_attention[0]            # (F, N, L)
face = token_masks[0] > 0
for name, u in updates.items():
    outside = u[~face].square().sum() / u.square().sum()
    print(f"{name:>16}: share of the identity update's energy outside the face {outside.item():6.1%}, "
          f"largest update off the face {u[~face].max().item():.2e}, inside {u[face].max().item():.2e}")
"""),
("code", r"""
import matplotlib.pyplot as plt

from labkit.common import to_uint8

top = attention["with face masks"].mean(dim=(0, 1)).argmax().item()
cols = min(num_frames, 4)
fig, axes = plt.subplots(4, cols, figsize=(2.2 * cols + 1, 9), layout="constrained")
vmax = max(u.max().item() for u in updates.values())
# one colour scale per row, shown by its colorbar: the same colour means the same number in every frame
amax = attention["with face masks"][:cols, :, top].max().item()
for t in range(cols):
    axes[0, t].imshow(to_uint8(frames[0, t]))
    axes[0, t].set_title(f"frame {t}")
    att = axes[1, t].imshow(attention["with face masks"][t, :, top].reshape(grid), cmap="magma", vmin=0, vmax=amax)
    axes[1, t].set_title(f"attention to id token {top}", fontsize=8)
    upd = axes[2, t].imshow(updates["without masks"][t].reshape(grid), cmap="viridis", vmin=0, vmax=vmax)
    axes[2, t].set_title("update, no masks", fontsize=8)
    axes[3, t].imshow(updates["with face masks"][t].reshape(grid), cmap="viridis", vmin=0, vmax=vmax)
    axes[3, t].set_title("update, face masks", fontsize=8)
for ax in axes.flat:
    ax.axis("off")
fig.colorbar(att, ax=axes[1, :], shrink=0.9, label="attention weight")
fig.colorbar(upd, ax=axes[2:, :], shrink=0.9, label="update size (norm)")
fig.suptitle("Identity branch: attention everywhere, update only inside the face mask")
fig.savefig(figure_path("05_identity_attention_maps.png"), dpi=80)
"""),
("md", r"""
The attention weights (second row) are spread over the whole frame, background included: attention alone
cannot keep the identity out of the background. The gate does: with face masks the update (last row) is
exactly zero off the face, while without masks (third row) every token is rewritten.

**Question:** the gate is a soft mask area-averaged onto a 16x16 grid. A patch half covered by the face
gets half the identity update. What would you expect at the edge of the face if you thresholded the mask to
0/1 instead, and what if the face is so small that it covers only one or two tokens?
"""),
]


NB07 = [
("md", r"""
# 07 · The identity-preservation loss

Next to the usual denoising loss, identity-consistent video models add a loss that looks at the generated
frames through a frozen face recognizer f:

$$L = \underbrace{\operatorname{mean}_t \lVert f(v_t) - \operatorname{mean}_r f(\mathrm{ref}_r)\rVert^2}
_{\text{reference term}}
\;+\; \lambda\,\underbrace{\operatorname{mean}_t \lVert f(v_t) - f(v_{t+1})\rVert^2}_{\text{temporal term}}$$

with $\lambda$ = `temporal_weight` = 0.5 by default. The reference term pulls every frame towards the
references; the temporal term penalises identity changing from one frame to the next. f's embeddings are
unit vectors, so $\lVert a - b\rVert^2 = 2 - 2\cos(a, b)$: each term is a cosine distance.

In this notebook you will be able to:
- write the loss vectorised, with ONE recognizer call for every frame of every video and the references;
- check it with `labkit.exercises.check` and against the article's frame-by-frame loop;
- see that gradients reach the generated frames while the frozen recognizer gets none;
- measure both terms on a stable clip and on a clip whose identity drifts.
"""),
("code", SETUP),
("code", DEVICE),
("md", r"""
## A stable clip and a drifting clip

`labkit.synthfaces` gives every identity a fixed set of traits (face shape, skin, hair, eyes, ...). A
*stable* clip renders one identity's traits in every frame. For a *drifting* clip we keep exactly the same
motion (pose, expression, lighting per frame) but slide the traits from identity A towards identity B over
the frames: continuous traits are interpolated, discrete ones switch half way. That is identity drift
made on purpose, with ground truth.
"""),
("code", r"""
import torch

from labkit import synthfaces
from labkit.common import figure_path, show_images
from labkit.faces import FaceRecognitionBackbone

num_frames = 8 if QUICK else 16
a, b = synthfaces.test_ids(2, offset=3).tolist()
gen = torch.Generator().manual_seed(0)
# one shot: camera, background and light from one sample; the head turns and smiles smoothly
shot = {k: v[0] for k, v in synthfaces.sample_nuisances(1, generator=gen).items()}
shot.update(yaw=torch.linspace(-0.4, 0.4, num_frames), smile=torch.linspace(0.1, 0.7, num_frames), blink=0.0,
            mouth_open=0.0)
nuisances = synthfaces.sample_nuisances(num_frames, generator=gen, **shot)
"""),
("code", r"""
traits_a = synthfaces.identity_traits(torch.tensor([a] * num_frames))
traits_b = synthfaces.identity_traits(torch.tensor([b] * num_frames))
alpha = torch.linspace(0, 1, num_frames)


def blend(ta, tb):
    if ta.is_floating_point():
        w = alpha.reshape(-1, *[1] * (ta.dim() - 1))
        return (1 - w) * ta + w * tb
    return torch.where((alpha >= 0.5).reshape(-1, *[1] * (ta.dim() - 1)), tb, ta)


drift_traits = {k: blend(traits_a[k], traits_b[k]) for k in traits_a}
"""),
("code", r"""
stable, stable_masks = synthfaces.render(traits_a, nuisances, size=64)
drifting, _ = synthfaces.render(drift_traits, nuisances, size=64)
references, reference_masks = synthfaces.render_faces(torch.tensor([a] * 3), size=64, generator=gen)  # 3 views of A
fig = show_images(torch.cat([stable, drifting]), ncols=num_frames, suptitle="top: stable (A)   bottom: A drifting to B")
fig = show_images(references, titles=["reference 1", "reference 2", "reference 3"])
"""),
("md", r"""
## Exercise: the loss, vectorised

The article writes the loss with a Python loop over frames, calling the recognizer again for every frame
(and re-encoding the references inside the loop). Write it without any loop:

- inputs: `generated_video` `(B, F, 3, H, W)`, `reference_faces` `(B, R, 3, H, W)`, `face_encoder`
  (maps `(N, 3, H, W) -> (N, 512)`), `temporal_weight`;
- call `face_encoder` **once** on all B·F frames and B·R references together (`torch.cat`, then
  `einops.rearrange` back to `(B, F, 512)` and `(B, R, 512)`)
- reference term: squared distance of each frame's embedding to the **mean** reference embedding, averaged
  over frames and videos;
- temporal term: squared distance between **adjacent** frames, averaged over the F-1 steps and videos;
- return `reference + temporal_weight * temporal` (a scalar).

The cell below is a stub: **replace `raise NotImplementedError(...)` with your code** and run the check. It
prints PASS or FAIL for each case; until every case passes, the rest of the notebook uses labkit's own
implementation, so the notebook runs either way. After a failed check, `hint("identity_loss")`
explains what the failing cases mean (ask again for a more specific hint), and `solution("identity_loss")` shows a
worked solution.
"""),
("code", r"""
from einops import rearrange

from labkit.exercises import check, hint, solution


def my_identity_loss(generated_video, reference_faces, face_encoder, temporal_weight=0.5):
    # TODO (exercise): one encoder call, mean reference, adjacent frames; keep the gradient
    raise NotImplementedError("exercise identity_loss: write this function, then run the cell")


# yours once every case passes, labkit's own until then: the notebook runs either way
my_identity_loss = check("identity_loss", my_identity_loss).function
"""),
("md", r"""
## Against the article's loop, and the gradient

`labkit.losses.identity_preservation_loss` is the same loss, with batches, single videos, and optional face
crops (`face_masks`: each frame is cropped to its face box with `torchvision.ops.roi_align`, still one
recognizer call). Below, the article's loop (with squared distances summed over the 512 dimensions, as in
the formula) gives the same number, with many more recognizer calls.
"""),
("code", r"""
import time

from labkit.losses import identity_preservation_loss

backbone = FaceRecognitionBackbone("synthfaces").to(device)


def article_loop(video, refs, f, temporal_weight=0.5):
    ref_embed = f(refs).mean(dim=0)
    reference = torch.stack([(f(frame[None])[0] - ref_embed).square().sum() for frame in video]).mean()
    temporal = torch.stack([(f(video[i][None])[0] - f(video[i + 1][None])[0]).square().sum()
                            for i in range(len(video) - 1)]).mean()
    return reference + temporal_weight * temporal


with torch.no_grad():
    start = time.perf_counter()
    loop_value = article_loop(drifting.to(device), references.to(device), backbone)
    loop_s = time.perf_counter() - start
    start = time.perf_counter()
    fast_value = identity_preservation_loss(drifting.to(device), references.to(device), backbone)
    fast_s = time.perf_counter() - start
print(f"loop {loop_value.item():.5f} in {loop_s * 1000:.0f} ms   vectorised {fast_value.item():.5f} in "
      f"{fast_s * 1000:.0f} ms")
"""),
("code", r"""
video = drifting.clone().to(device).requires_grad_(True)   # stands in for the generator's output
loss = identity_preservation_loss(video, references.to(device), backbone)
loss.backward()
print(f"gradient on the frames: norm {video.grad.norm():.3e}")
print("recognizer parameters with a gradient:", sum(p.grad is not None for p in backbone.parameters()))
"""),
("md", r"""
## Face crops: both or neither

With `face_masks`, each frame is cropped to its face box before f sees it; `reference_masks` does the same for
the references. Crop both or neither: cropping only the frames compares a close-up with a full portrait,
and even a perfect frame then looks far from its references. On the stable clip of A:
"""),
("code", r"""
with torch.no_grad():
    for label, frame_masks, ref_masks in [("no crops", None, None), ("frames cropped only", stable_masks, None),
                                         ("both cropped", stable_masks, reference_masks)]:
        _, t = identity_preservation_loss(
            stable[None].to(device), references[None].to(device), backbone, return_terms=True,
            face_masks=None if frame_masks is None else frame_masks[None].to(device),
            reference_masks=None if ref_masks is None else ref_masks[None].to(device))
        print(f"{label:>20}: reference term {t['reference'].item():.3f}")
"""),
("md", r"""
## Measured: the two terms on a stable and a drifting clip

We compute both terms per frame (`return_terms=True`) for the two clips, with the same references of A.
The synthetic frames are already face-centred portraits, framed like the recognizer's training images, so
we use no crops here.
"""),
("code", r"""
import matplotlib.pyplot as plt

with torch.no_grad():
    terms = {}
    for name, clip in [("stable", stable), ("drifting", drifting)]:
        loss, t = identity_preservation_loss(clip[None].to(device), references[None].to(device), backbone,
                                             return_terms=True)
        terms[name] = t
        print(f"{name:>8}: loss {loss.item():.3f} = reference {t['reference'].item():.3f} + 0.5 * temporal "
              f"{t['temporal'].item():.3f}")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
for name, t in terms.items():
    axes[0].plot(t["reference_per_frame"][0].cpu(), marker="o", label=name)
    axes[1].plot(torch.arange(1, num_frames), t["temporal_per_step"][0].cpu(), marker="o", label=name)
# fixed y axes, the same for both terms (both are squared distances between embeddings), so a small change
# looks small
axes[0].set(title="reference term per frame", xlabel="frame t", ylabel="||f(v_t) - mean f(ref)||^2",
            ylim=(0, 3))
axes[1].set(title="temporal term per step", xlabel="step t-1 -> t", ylabel="||f(v_t) - f(v_t-1)||^2",
            ylim=(0, 3))
axes[0].legend()
fig.tight_layout()
fig.savefig(figure_path("07_identity_loss_terms.png"), dpi=80)
"""),
("md", r"""
The stable clip's reference term stays low and flat: it is not zero, because the three references differ in
pose, lighting and background (their mean embedding is shorter than 1) and each frame differs from them
again. The drifting clip starts at the same value in frame 0, where both clips show A, then climbs as the
traits move to B and ends several times higher. The temporal term separates the clips at every step: the
stable clip barely moves from frame to frame, the drifting clip moves most in the middle, where the blend is
half way and the discrete traits switch.

**Question:** the temporal term only compares neighbours. A clip that drifts very slowly (a tiny change per
frame) could keep it near zero while the identity ends up somewhere else entirely. Which term catches that
drift, and what would happen to training if you used only the temporal term?
"""),
]



if __name__ == "__main__":
    for name, cells in [("04_identity_encoder", NB04), ("05_identity_attention", NB05), ("07_identity_losses", NB07)]:
        write_notebook(cells, name, id_prefix=name[:2], id_width=3)
