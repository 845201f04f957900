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
# # 05 · Identity-aware attention: spatial, temporal, identity
#
# A video transformer block sees a clip as tokens with layout `b f n d` (batch, frames, tokens per frame,
# channels). The identity-aware block of this course runs three attentions in a row:
#
# 1. **spatial**: the tokens of one frame look at each other;
# 2. **temporal**: each grid position looks at itself in every frame, which is how a face stays the same
#    from frame to frame;
# 3. **identity**: every token looks at the identity tokens from notebook 04, and the result is kept only
#    inside the face mask, scaled by `identity_strength`.
#
# In this notebook you will be able to:
# - write the two `einops` rearranges that move between spatial and temporal layouts, and see what goes
#   wrong with a plain `reshape`;
# - write the temporal step and the masked identity branch yourself, and have `labkit.exercises.check` test it;
# - check `labkit`'s `F.scaled_dot_product_attention` block against the same block written with
#   `nn.MultiheadAttention`, and time both;
# - show with attention maps that, with face masks, the identity branch leaves the background untouched.

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
# ## A clip as tokens
#
# We render a short clip of one synthetic character with `labkit.synthfaces`. The video model cuts each
# 64x64 frame into 4x4 patches, so one frame becomes a 16x16 grid of N = 256 tokens. Here a fixed random
# linear map plays the patch embedding; the real model learns it.

# %%
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

# %%
dim, patch = 64, 4
torch.manual_seed(0)
patch_embed = torch.nn.Linear(3 * patch * patch, dim)
with torch.no_grad():
    x = patch_embed(rearrange(frames, "b f c (h p) (w q) -> b f (h w) (c p q)", p=patch, q=patch))
grid = (64 // patch, 64 // patch)
print("tokens x:", tuple(x.shape), "= (batch, frames, tokens per frame, channels), grid", grid)

# %% [markdown]
# ## Spatial and temporal layouts
#
# Spatial attention wants every frame as its own sequence: `b f n d -> (b f) n d`. Temporal attention wants
# every grid position as its own sequence over the frames: `b f n d -> (b n) f d`. `einops` names each axis,
# so the pattern says exactly which axes are merged.
#
# A plain `x.reshape(b * n, f, d)` has the right shape but the wrong content: it reads the memory in
# `b f n d` order and cuts it into pieces of length f, so a "temporal" sequence mixes tokens of one frame.
# Let's label every token with its (frame, token) index and look.

# %%
b, f, n = 1, 3, 4
frame_of = torch.arange(f)[None, :, None].expand(b, f, n)   # (b, f, n): which frame a token is in
token_of = torch.arange(n)[None, None, :].expand(b, f, n)   # (b, f, n): which grid position
labels = torch.stack([frame_of, token_of], dim=-1)          # (b, f, n, 2)

right = rearrange(labels, "b f n two -> (b n) f two")
wrong = labels.reshape(b * n, f, 2)
print("rearrange, sequence for grid position 1 (frame, token):", right[1].tolist())
print("reshape,   'sequence' number 1               (frame, token):", wrong[1].tolist())

# %% [markdown]
# With `rearrange`, sequence 1 is token 1 in frames 0, 1, 2: the same place followed through time. With
# `reshape`, sequence 1 jumps across tokens and frames. The shapes agree, so nothing crashes: only a test
# on the values catches it.
#
# ## Why the mask gates the output, not the queries
#
# The identity branch is cross-attention: queries from the video tokens, keys and values from the identity
# tokens (with their own projections `to_k_ip` and `to_v_ip`, as in IP-Adapter). Multiplying the *queries*
# by the mask does not switch a background token off: a zero query gives uniform attention weights (softmax
# of zeros), and the token still receives the mean of the values. Multiplying the *output* by the mask does:
#
# `x = x + identity_strength * mask * identity_attention(x)`
#
# Masks can be soft (values between 0 and 1) or binary, and at pixel or token resolution. The block
# area-averages pixel masks onto its token grid, so each token's gate is the fraction of its patch that is
# face.

# %%
from labkit.attention import masks_to_tokens

token_masks = masks_to_tokens(masks, num_frames, grid)   # (1, F, 256), soft at the edge of the face
print("token masks", tuple(token_masks.shape), " values between", token_masks.min().item(), "and",
      token_masks.max().item())

# %% [markdown]
# ## Exercise: the temporal step and the masked identity branch
#
# Write the end of the block. You get `x` with layout `b f n d` (after spatial attention) and two functions:
#
# - `temporal_attention(h)`: maps `(batch, frames, d) -> (batch, frames, d)` (its layer norm is inside, no
#   residual)
# - `identity_attention(x)`: maps `(b, f, n, d) -> (b, f, n, d)`, the identity branch before gating;
#
# plus `token_masks` `(b, f, n)` and `identity_strength` `(b, 1, 1, 1)`. Return the new `x` `(b, f, n, d)`:
#
# 1. rearrange to the temporal layout, add the temporal attention as a residual, rearrange back;
# 2. add the identity branch, gated by the mask and scaled by the strength.
#
# The cell below is a stub: **replace `raise NotImplementedError(...)` with your code** and run the check. It
# prints PASS or FAIL for each case; until every case passes, the rest of the notebook uses labkit's own
# implementation, so the notebook runs either way. After a failed check, `hint("temporal_identity")`
# explains what the failing cases mean (ask again for a more specific hint), and `solution("temporal_identity")` shows a
# worked solution.

# %%
from labkit.exercises import check, hint, solution


def my_temporal_identity(x, temporal_attention, identity_attention, token_masks, identity_strength):
    # TODO (exercise): temporal residual along the frames of each patch, then the gated identity branch
    raise NotImplementedError("exercise temporal_identity: write this function, then run the cell")


# yours once every case passes, labkit's own until then: the notebook runs either way
my_temporal_identity = check("temporal_identity", my_temporal_identity).function

# %% [markdown]
# ## The whole block, checked against `nn.MultiheadAttention`
#
# `labkit.attention.IdentityAwareAttention` is the block: pre-norm and residual around each attention, all
# three computed by `F.scaled_dot_product_attention`. The article the course follows writes it with
# `nn.MultiheadAttention`. `MultiheadReferenceAttention` is that version; we copy the weights across and
# compare the outputs. Expect a difference around 1e-6 (float rounding), far below 1e-5.

# %%
from labkit.attention import IdentityAwareAttention, MultiheadReferenceAttention

block = IdentityAwareAttention(dim, num_heads=4)
reference = MultiheadReferenceAttention.from_block(block)
identity_tokens = torch.randn(1, 8, dim)
with torch.no_grad():
    ours = block(x, identity_tokens, masks, identity_strength=0.8)
    theirs = reference(x, identity_tokens, masks, identity_strength=0.8)
print(f"max |SDPA block - MultiheadAttention block| = {(ours - theirs).abs().max().item():.2e}  (expect < 1e-5)")

# %% [markdown]
# Now time forward + backward at one realistic size: 8 frames of 16x16 tokens, 256 channels (the same
# command runs from a terminal: `python -m labkit.attention`).

# %%
from labkit.attention import benchmark

timing = benchmark(frames=8, side=16, dim=256, repeats=2 if QUICK else 5)
print(f"SDPA block: {timing['sdpa_s'] * 1000:.0f} ms   nn.MultiheadAttention block: "
      f"{timing['multihead_s'] * 1000:.0f} ms   ratio {timing['speedup']:.2f}x")

# %% [markdown]
# ## Measured: where does the identity branch act?
#
# We encode the character's three reference images into identity tokens with the `IdentityEncoder` of
# notebook 04 (untrained here: we only look at *where* the branch acts, not what it writes). Then we run the
# block twice with `record_identity_attention = True`, once with the face masks and once without, and plot:
#
# - the identity attention of every token to its most-attended identity token (every row of attention weights
#   sums to 1, background included)
# - the size of the identity update `||identity_strength * mask * identity_attention(x)||` per token.

# %%
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

# %%
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

# %% [markdown]
# The attention weights (second row) are spread over the whole frame, background included: attention alone
# cannot keep the identity out of the background. The gate does: with face masks the update (last row) is
# exactly zero off the face, while without masks (third row) every token is rewritten.
#
# **Question:** the gate is a soft mask area-averaged onto a 16x16 grid. A patch half covered by the face
# gets half the identity update. What would you expect at the edge of the face if you thresholded the mask to
# 0/1 instead, and what if the face is so small that it covers only one or two tokens?
