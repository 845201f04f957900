# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
#   language_info:
#     name: python
# ---

# %% [markdown]
# # 04 · The identity encoder: from a face to identity tokens
#
# The video model cannot look at a reference photo directly; it attends to *tokens*. The identity encoder
# turns reference faces into a small set of identity tokens:
#
# `reference faces -> frozen recognizer f (512-d) -> Linear(512, embed_dim) -> a learned bank of query
# tokens cross-attends to it -> identity tokens (B, num_tokens, embed_dim)`
#
# The same pattern is the Perceiver resampler of IP-Adapter-Plus, and appears in InstantID and ConsisID.
#
# In this notebook you will be able to:
# - embed synthetic faces with the frozen recognizer and read their cosine similarities;
# - see why the article's sketch, cross-attention from the bank to ONE face embedding, is degenerate;
# - write the resampler's bank cross-attention yourself and check it with `labkit.exercises.check`;
# - average several references, and measure how much closer the identity tokens of one face under new
#   poses are than those of different faces.

# %% active="ipynb"
# # Setup: on Colab this installs labkit from its repository; anywhere else it does nothing.
# # Quick mode (less work: for a slow machine, or Binder's 2 GB): uncomment the next line before running any cell
# # (or restart the kernel after). Anywhere: Colab, Binder, JupyterLab.
# # %env LABKIT_QUICK=1
# import sys
#
# if "google.colab" in sys.modules:
#     %pip install -q "labkit @ git+https://github.com/character-consistency-lab/labkit"

# %%
from labkit.common import QUICK, get_device, seed_everything, use_one_cpu_thread

device = get_device()
seed_everything(0)
use_one_cpu_thread(device)  # steadier on a shared CPU; help(use_one_cpu_thread) says why
print(device, "quick mode" if QUICK else "normal mode")

# %% [markdown]
# ## The frozen recognizer f
#
# `labkit.faces.FaceRecognitionBackbone` is a small recognizer trained on the synthetic faces (notebook 03).
# It takes images in [-1, 1] of any size (it resizes internally) and returns unit-norm 512-d embeddings, so
# the cosine similarity of two faces is a dot product. It is frozen: the identity encoder never trains it.

# %%
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

# %%
with torch.no_grad():
    ea, eb = backbone(view_a.to(device)), backbone(view_b.to(device))
print("embedding shape", tuple(ea.shape), " norms", ea.norm(dim=-1).round(decimals=3).tolist())
print("cosine(view a, view b), rows = view a, cols = view b:")
print((ea @ eb.T).cpu().numpy().round(2))

# %% [markdown]
# The diagonal (same identity, different view) should be clearly higher than the rest.
#
# ## The article's sketch, and why it is degenerate
#
# The article writes the encoder as cross-attention with `query = identity_bank` (32 learned tokens) and
# `key = value = projection(face_embedding)`: a single key. Softmax over one key is 1 for every query, so
# **every query receives the same value**. The output token i is `bank_i + W_o W_v e`: the identity moves all
# 32 tokens by the same vector, and the tokens differ from each other only by the part that does not depend
# on the face. 32 tokens, one direction of identity.
#
# Let's see it with the weights of a real `IdentityEncoder` layer.

# %%
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


# %%
def spread(move):
    # how differently the tokens move, relative to how far they move: 0 = all tokens move alike
    return ((move - move.mean(dim=0)).norm(dim=-1).mean() / move.norm(dim=-1).mean()).item()


print("article's attention weights: min", weights.min().item(), "max", weights.max().item())
# how each of the tokens moves when the face changes from identity 0 to identity 1
print(f"article:   spread of that move across the {num_tokens} tokens {spread(out[0] - out[1]):.3f}")
print(f"resampler: spread of that move across the {num_tokens} tokens {spread(good[0] - good[1]):.3f}")

# %% [markdown]
# ## The fix: the Perceiver resampler
#
# IP-Adapter-Plus's resampler lets the bank queries attend to the **concatenation** of the face token(s) and
# the latents (the bank itself): `keys = values = [face; bank]`. Now each query weighs "the face" against
# "the other queries" with its own weights, so different tokens take different amounts and mixtures of the
# identity. A feed-forward layer after the attention then mixes the identity into each token non-linearly.
# (Using several face tokens, e.g. a CLIP feature map, is the other way out; our recognizer gives one vector.)
#
# ## Exercise: the bank cross-attention
#
# Write `my_bank_attention(latents, context, to_q, to_k, to_v, to_out, num_heads)`:
#
# - `latents`: `(B, T, D)`, the bank (already layer-normed); `context`: `(B, S, D)`, the projected face
#   token(s) (already layer-normed); `to_q`, `to_k`, `to_v`, `to_out`: `D -> D` linear maps;
# - queries from the latents; keys and values from `[context; latents]` along the token axis;
# - `num_heads` heads: split channels as `"b l (h c) -> b h l c"`, scaled dot-product attention, merge back,
#   then `to_out`. Return `(B, T, D)`.
#
# The cell below is a stub: **replace `raise NotImplementedError(...)` with your code** and run the check. It
# prints PASS or FAIL for each case; until every case passes, the rest of the notebook uses labkit's own
# implementation, so the notebook runs either way. After a failed check, `hint("bank_attention")`
# explains what the failing cases mean (ask again for a more specific hint), and `solution("bank_attention")` shows a
# worked solution.

# %%
from einops import rearrange

from labkit.exercises import check, hint, solution


def my_bank_attention(latents, context, to_q, to_k, to_v, to_out, num_heads):
    # TODO (exercise): queries from the bank; keys and values from the face token(s) and the bank
    raise NotImplementedError("exercise bank_attention: write this function, then run the cell")


# yours once every case passes, labkit's own until then: the notebook runs either way
my_bank_attention = check("bank_attention", my_bank_attention).function

# %% [markdown]
# ## Several references
#
# A single photo carries its pose and lighting with it. ID-Animator averages the embeddings of several
# references, so what the references share (the identity) stays and what they don't (pose, light) shrinks.
# `encode_identity` accepts `(B, 3, H, W)` or `(B, R, 3, H, W)` and averages the R embeddings before the
# projection.

# %%
refs = torch.stack([view_a, view_b], dim=1).to(device)   # (4 identities, R=2, 3, 64, 64)
with torch.no_grad():
    tokens = encoder.encode_identity(refs)
    by_hand = encoder.encode_embeddings(torch.stack([ea, eb], dim=1).mean(dim=1))
print("tokens", tuple(tokens.shape), f"  max |encode_identity - by hand| = {(tokens - by_hand).abs().max():.1e}")

# %% [markdown]
# ## Measured: do identity tokens keep identities apart?
#
# The encoder is untrained here: its projection and bank are random. Still, its tokens are a smooth
# function of the recognizer's embedding, so they should inherit its geometry. We render held-out identities
# twice (new pose, expression, lighting each time) and compare the cosine similarity of the flattened
# identity tokens for the **same** identity against **different** identities, next to the same measure on
# the raw 512-d embeddings.
#
# Every token also carries the learned bank, which is the same for every face. To see the part that depends
# on the face, we also compare the tokens after subtracting their mean over all the faces ("centred").

# %%
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

# %%
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

# %% [markdown]
# Read the three panels left to right. The raw identity tokens keep the recognizer's order (same identity
# above different identities) but are squeezed near 1: most of every token is the learned bank and the layer
# norms, which are the same for every face. Centred, the gap between same and different identity is about as
# large as the recognizer's own: the untrained encoder passes the identity through almost unchanged, and
# hardly adds to it. Training the encoder inside the video model (notebook 08) decides what the tokens spend
# their width on.

# %% [markdown]
# ## What training does to the tokens: learned bank against face-only tokens
#
# Untrained, both designs pass the face through. What matters is what a video model *learns* to do with
# them. The learned bank offers the model an easy shortcut: a set of tokens that is the same for every face,
# which it can read as extra "register" tokens, a constant bias, instead of the face. Nothing stops the
# resampler from drifting there, and in this course's measurements a small model trained with it ends up with
# tokens that differ between faces by well under 1% of their size.
#
# The alternative the course's model uses is IP-Adapter-FaceID's: **face-only tokens**, one linear map from the
# 512-d embedding to all T tokens, then LayerNorm (`IdentityEncoder(design="face_only")`). No part of them is
# independent of the face, so they cannot become a constant without throwing the face away.
#
# Below we train the same tiny model twice, on the same single-frame batches, once per design, and measure
# with the training monitor (`labkit.train.monitor`):
#
# - **token spread**: the mean distance between two faces' tokens, relative to the tokens' size (0 = every
#   face gets the same tokens);
# - **swap sensitivity**: how much the model's prediction on a noisy frame changes when another face's tokens
#   are given (0 = the model ignores which face it is given).

# %%
from labkit.train import compare_token_designs

probe_steps = 40 if QUICK else 150
probe = compare_token_designs(steps=probe_steps)
for design, (first, last) in probe.items():
    print(f"{design:>10}: token spread {first['token_spread']:.3f} -> {last['token_spread']:.3f}   "
          f"swap sensitivity {first['swap_sensitivity']:.4f} -> {last['swap_sensitivity']:.4f}   "
          f"(after {last['step']} steps)")

# %% [markdown]
# Compare the two rows at the end of training: how far did each design's spread fall, and how strongly does
# the model react to a swapped face? The run is short (a couple of minutes on a CPU); the shipped model's
# training log (`data/identity_video_dit/training.json`) has the same two figures over its whole run.
#
# **Question:** averaging R references shrinks the nuisance part of the embedding. How would you measure
# whether 3 references give tokens closer to the identity than 1 reference, and would you expect the gain from
# 5 references over 3 to be as large as from 3 over 1?
