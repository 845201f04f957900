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
# # 03 · Face embeddings: detecting faces and telling people apart
#
# Every identity score in this course comes from a **face recognizer** f: a frozen network that maps a face
# image to a 512-d unit vector, such that two photos of the same person point the same way. This notebook
# builds the measuring instrument and checks that it is trustworthy before anything else relies on it.
#
# In this notebook you will be able to:
# - find a face in a real photo with **MTCNN** and get its box, a 160x160 crop and a mask;
# - load facenet's **InceptionResnetV1** (vggface2 weights) when they are available, and understand the clear
#   error you get offline;
# - embed synthetic faces with the course's own **synthfaces recognizer**;
# - write `cosine_similarity_matrix` yourself (the exercise), draw a similarity heatmap and a 2-D map of the
#   embeddings;
# - measure the recognizer the way face verification papers do: **ROC-AUC, EER, TAR at FAR=1e-3**, and the
#   **ceiling** and **floor** that every later similarity is read against.

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
# ## MTCNN on a real photo
#
# MTCNN is a small cascade of three CNNs that proposes face boxes, refines them and scores them. Its weights
# ship inside the facenet-pytorch wheel, so it works offline. `labkit.faces.detect_faces` wraps it and returns
# the boxes `(x1, y1, x2, y2)`, a probability per face, a 160x160 crop (the box cut out and resized to the
# input size facenet's recognizer expects: cropped, not *aligned*; nothing rotates the face to level the eyes)
# and a mask built from the box with `box_to_mask` (the function you wrote in 02).
# We try it on the astronaut photo that ships with scikit-image.

# %%
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
from skimage import data

from labkit import face_verification, faces, synthfaces
from labkit.common import figure_path, show_images, to_uint8

astronaut = data.astronaut()                       # (512, 512, 3) uint8
det = faces.detect_faces(astronaut)
print(det.message, "| boxes", det.boxes.round().tolist(), "| probability", det.probs.round(decimals=4).tolist())
print("crops", tuple(det.crops.shape), " masks", tuple(det.masks.shape))

# %%
x1, y1, x2, y2 = det.boxes[0].tolist()
fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
axes[0].imshow(astronaut)
axes[0].add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="lime", linewidth=2))
axes[0].set_title(f"MTCNN box, p = {det.probs[0]:.3f}")
axes[1].imshow(to_uint8(det.crops[0]))
axes[1].set_title("160x160 crop (cut and resized)")
axes[2].imshow(astronaut)
axes[2].imshow(det.masks[0], alpha=0.45, cmap="Reds")
axes[2].set_title("mask from the box")
for ax in axes:
    ax.axis("off")
fig.tight_layout()
fig.savefig(figure_path("03_mtcnn_astronaut.png"), dpi=80, bbox_inches="tight")

# %% [markdown]
# What if there is no face? MTCNN's own batched code raises an obscure error when some images in a batch
# have no face. `detect_faces` handles images one at a time and returns an empty result with a message, so
# your code can check `len(det)` instead of catching exceptions.

# %%
blank = np.full((200, 200, 3), 128, np.uint8)
with warnings.catch_warnings(record=True):
    warnings.simplefilter("always")
    empty = faces.detect_faces([astronaut, blank])
print(len(empty), "face(s);", empty.message, "| faces come from images", empty.image_index.tolist())

# %% [markdown]
# ## InceptionResnetV1 with vggface2 weights
#
# facenet-pytorch's `InceptionResnetV1`, trained on the VGGFace2 dataset, is the recognizer many identity
# papers use. Its weights (about 110 MB) are not inside the wheel: facenet downloads them on first use into
# its cache. On an offline machine (or a CI runner without network) that cannot work, so
# `FaceRecognitionBackbone("vggface2")` gives up after a few seconds with an error that says where to put the
# file. We try it, and catch the error if it comes.

# %%
t0 = time.time()
try:
    vgg = faces.FaceRecognitionBackbone("vggface2", device=device)
    with torch.no_grad():
        e = vgg(det.crops.to(device))
    print(f"loaded in {time.time() - t0:.1f} s; the astronaut's embedding: shape {tuple(e.shape)}, "
          f"norm {e.norm():.3f}")
except (RuntimeError, ValueError) as err:  # offline (RuntimeError) or a corrupt cached file (ValueError)
    print(f"no vggface2 weights after {time.time() - t0:.1f} s:\n{err}")

# %% [markdown]
# If you saw the error: nothing is broken. It says which file to download and where to put it (or how to pass
# a path). For the rest of the course we do not need it: faces here are synthetic, and a recognizer trained
# on them works offline.
#
# ## The synthfaces recognizer
#
# `FaceRecognitionBackbone("synthfaces")` is a small CNN (a few MB, in `data/`) trained with an ArcFace loss on
# training identities only, with blur, noise and down-scaling so that it also copes with the blurry frames a
# small video model produces. It accepts images of any size and returns unit-norm 512-d embeddings. It is
# frozen: in eval mode, no gradients to its weights. It is a measuring instrument, not something to train.
#
# We render several held-out identities, each in several poses and expressions.

# %%
backbone = faces.load_recognizer("synthfaces", str(device))
n_ids, n_views = (6, 5) if QUICK else (10, 6)
ids = synthfaces.test_ids(n_ids, offset=40).repeat_interleave(n_views)   # id0 x n_views, id1 x n_views, ...
images, _ = synthfaces.render_faces(ids, 64, torch.Generator().manual_seed(0))
with torch.no_grad():
    emb = backbone(images.to(device)).cpu()
print("images", tuple(images.shape), "-> embeddings", tuple(emb.shape), " norms", emb.norm(dim=1)[:4].numpy().round(4))
fig = show_images(images[: 3 * n_views], ncols=n_views, size=1.3,
                  suptitle="three of the identities, each in several views")

# %% [markdown]
# ## Exercise: the cosine similarity matrix
#
# To compare every face with every other face we need the cosine similarity of every row of `a` (N, D) with
# every row of `b` (M, D): an (N, M) matrix. Write `my_cosine_similarity_matrix(a, b)`:
#
# - divide each **row** of `a` and of `b` by its length (the norm along `dim=1`), so that each row is a unit
#   vector;
# - then one matrix product `a @ b.T` gives all N x M dot products, which are now cosines;
# - guard against a zero row (clamp the norm to a small eps) so it gives 0 instead of nan.
#
# Why normalise even though the recognizer already returns unit vectors? Because your function will also be
# used on averaged embeddings and on identity tokens, which are not unit length: a longer vector must not
# look "more similar".
#
# The cell below is a stub: **replace `raise NotImplementedError(...)` with your code** and run the check. It
# prints PASS or FAIL for each case; until every case passes, the rest of the notebook uses labkit's own
# implementation, so the notebook runs either way. After a failed check, `hint("cosine_similarity_matrix")`
# explains what the failing cases mean (ask again for a more specific hint), and
# `solution("cosine_similarity_matrix")` shows a worked solution.
#
# The check compares your function with labkit's on rows of very different lengths, N != M, N = 1 and a
# zero vector.

# %%
from labkit.exercises import check, hint, solution


def my_cosine_similarity_matrix(a, b, eps=1e-8):
    # TODO (exercise): the (N, M) cosine similarities of every row of a with every row of b
    raise NotImplementedError("exercise cosine_similarity_matrix: write this function, then run the cell")


# yours once every case passes, labkit's own until then: the notebook runs either way
my_cosine_similarity_matrix = check("cosine_similarity_matrix", my_cosine_similarity_matrix).function

# %% [markdown]
# ### The similarity heatmap
#
# With the faces sorted by identity, the same person forms a bright block on the diagonal (same identity,
# other pose or expression) and everything off the blocks should be dark (different identities).

# %%
sim = my_cosine_similarity_matrix(emb, emb)
fig, ax = plt.subplots(figsize=(6.5, 5.5))
im = ax.imshow(sim, cmap="viridis", vmin=-0.2, vmax=1)
ticks = [n_views * i + (n_views - 1) / 2 for i in range(n_ids)]
ax.set_xticks(ticks, [f"id {i}" for i in ids[::n_views].tolist()], rotation=45, fontsize=7)
ax.set_yticks(ticks, [f"id {i}" for i in ids[::n_views].tolist()], fontsize=7)
ax.set_title(f"cosine similarity: {n_ids} held-out identities x {n_views} views")
fig.colorbar(im, ax=ax)
fig.tight_layout()
fig.savefig(figure_path("03_similarity_heatmap.png"), dpi=80)
same = ids[:, None] == ids[None, :]
off_diagonal = ~torch.eye(len(ids), dtype=torch.bool)
print(f"mean cosine, same identity: {sim[same & off_diagonal].mean():.3f}   different: {sim[~same].mean():.3f}")

# %% [markdown]
# ### A 2-D map of the embeddings
#
# 512 dimensions cannot be drawn, but a PCA projection onto the two directions of largest variance shows
# the structure: each identity should form its own tight cluster, far from the others.

# %%
from sklearn.decomposition import PCA

points = PCA(n_components=2).fit_transform(emb.numpy())
fig, ax = plt.subplots(figsize=(6, 5))
colors = plt.cm.tab10(np.arange(n_ids) % 10)
for k in range(n_ids):
    sel = slice(k * n_views, (k + 1) * n_views)
    ax.scatter(points[sel, 0], points[sel, 1], color=colors[k], s=40, label=f"id {ids[k * n_views].item()}")
ax.set(title="PCA of recognizer embeddings, coloured by identity", xlabel="PC 1", ylabel="PC 2")
ax.legend(fontsize=7, ncol=2)
fig.tight_layout()
fig.savefig(figure_path("03_embedding_pca.png"), dpi=80)

# %% [markdown]
# ## Measured: is the recognizer good enough to be our instrument?
#
# Face verification asks "are these two images the same person?" by thresholding their cosine similarity.
# Over many **genuine** pairs (same identity) and **impostor** pairs (different identities):
#
# - **ROC-AUC**: the chance that a random genuine pair scores above a random impostor pair (1 is perfect);
# - **EER** (equal error rate): the threshold where wrongly rejected genuine pairs and wrongly accepted
#   impostors are equally frequent; lower is better;
# - **TAR at FAR=1e-3**: the fraction of genuine pairs accepted when only 1 impostor pair in 1000 may pass.
#
# We render held-out identities with random nuisances (every image its own pose, lighting, background and
# camera, so pairs span "cuts"), and score every pair with your function.

# %%
n_verify, per_id = (60, 3) if QUICK else (200, 4)
v_ids = synthfaces.test_ids(n_verify, offset=1000).repeat_interleave(per_id)
v_images, _ = synthfaces.render_faces(v_ids, 64, torch.Generator().manual_seed(1))
v_emb = faces.embed(backbone, v_images)
v_sim = my_cosine_similarity_matrix(v_emb, v_emb)
pair = torch.triu(torch.ones_like(v_sim, dtype=torch.bool), diagonal=1)      # each pair once
same_id = v_ids[:, None] == v_ids[None, :]
genuine, impostor = v_sim[same_id & pair].numpy(), v_sim[~same_id & pair].numpy()
report = face_verification.verification_metrics(genuine, impostor)
print(f"{len(genuine)} genuine and {len(impostor)} impostor pairs of {n_verify} held-out identities")
print(f"ROC-AUC {report['roc_auc']:.4f}   EER {100 * report['eer']:.2f}%   "
      f"TAR@FAR=1e-3 {100 * report['tar_at_far_1e-3']:.1f}%")

# %%
fig, ax = plt.subplots(figsize=(7, 3.2))
bins = np.linspace(-0.4, 1, 50)
ax.hist(impostor, bins=bins, density=True, alpha=0.6, label="impostor pairs (different identities)")
ax.hist(genuine, bins=bins, density=True, alpha=0.6, label="genuine pairs (same identity)")
ax.set(xlabel="cosine similarity", ylabel="density", title=f"EER {100 * report['eer']:.2f}%")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(figure_path("03_verification_hist.png"), dpi=80)

# %% [markdown]
# ## The ceiling and the floor
#
# A raw cosine of, say, 0.6 between a generated frame and a reference means little on its own. Every later
# notebook reads similarities against two measured levels of this recognizer:
#
# - the **ceiling**: real rendered frames of the same identity (other pose, expression, blink) within one
#   shot, and the same across a **cut** (camera, background and lighting changed);
# - the **floor**: frames of different identities.
#
# `normalised identity = (sim - floor) / (ceiling - floor)` is then 1 for "as good as the real person" and 0
# for "a stranger".

# %%
levels = face_verification.cosine_ceiling_and_floor(backbone, size=64, num_identities=24 if QUICK else 48, num_frames=8)
print(f"no cut:     ceiling {levels['ceiling']:.3f}   floor {levels['floor']:.3f}   gap {levels['gap']:.3f}")
print(f"across cut: ceiling {levels['ceiling_cut']:.3f}   floor {levels['floor_cut']:.3f}   "
      f"gap {levels['gap_cut']:.3f}")
print(f"verification: ROC-AUC {report['roc_auc']:.4f}, EER {100 * report['eer']:.2f}%, "
      f"TAR@FAR=1e-3 {100 * report['tar_at_far_1e-3']:.1f}%")

# %% [markdown]
# ## Does your metric measure identity, or hair colour?
#
# A score is only as honest as what it cannot be fooled by. Before trusting it, feed it things that should
# score **low**:
#
# - a **look-alike**: another person drawn with *this* person's skin, hair colour and style, brows, lips, eyes'
#   colour and accessories, but their own face shape, eyes, nose, mouth and ears
#   (`synthfaces.identity_traits(ids, look_from=person)`);
# - the person's real frames reduced to an **8x8 grid of colour blocks**: every colour is right, no face is left;
# - a **flat colour** and **pure noise**.
#
# `labkit.metrics.identity_scores(frames, references)` is the course's one answer to "how much is each frame
# this person?". It normalises the cosine between the recognizer embeddings of frame and references between
# the **floor** (strangers, 0) and the **ceiling** (real frames after a cut, 1), and multiplies by the
# recognizer's probability that the frame is a **face** at all: a recognizer maps *any* picture to some
# embedding, so it needs a second head trained to say "this is not a face" (on colour blocks, patch mosaics,
# mush, noise and flat colour made from real faces).

# %%
from labkit import metrics

person = synthfaces.test_ids(6, offset=3000)
look_alike_of = synthfaces.test_ids(6, offset=5000)         # their own geometry, the person's look
g = torch.Generator().manual_seed(0)
real = synthfaces.make_clips(person, num_frames=8, size=32, num_refs=3, num_cuts=2, generator=g)
look = synthfaces.make_clips(look_alike_of, num_frames=8, size=32, num_refs=0, num_cuts=2, generator=g,
                             look_from=person)
candidates = {
    "same person": real.frames,
    "look-alike": look.frames,
    "stranger": real.frames.roll(1, 0),
    "8x8 colour blocks": metrics.colour_blocks(real.frames),
    "pure noise": torch.randn(real.frames.shape, generator=g).clamp(-1, 1),
}
row = torch.stack([real.references[0, 0]] + [frames[0, 0] for frames in candidates.values()])
show_images(row, titles=["reference"] + list(candidates), size=2.0)

# %% [markdown]
# Now score every kind of frame against the person's three references, with three recognizers, each trained
# with one more thing that takes the colour shortcut away:
#
# 1. **baseline**: ArcFace on rendered identities, nothing else;
# 2. **hard negatives** (`"synthfaces"`, the identity encoder the video model is conditioned on): every
#    training identity comes in a family of six that share one look and differ only in face geometry, and 85%
#    of its training images get random hue, saturation and brightness changes;
# 3. **hard negatives + look swaps** (`"synthfaces-eval"`, the recognizer `identity_scores` uses): besides,
#    80% of each identity's training faces wear a random other person's colours, hair and accessories and are
#    still labelled as that identity. Now only the face itself tells a class apart, as for a real recognizer
#    that must know a person after a haircut.
#
# Why two shipped recognizers? The video model needs tokens that carry the whole look (hair and colours are
# part of what it must draw), while the score must ask whether the *face* is right. And a model should not be
# graded by the network it was trained with: ConsisID, too, reports a second recognizer (CurricularFace)
# beside the ArcFace it conditions on.

# %%
recognizers = {"baseline": faces.FaceRecognitionBackbone("synthfaces-baseline"),
               "hard negatives": faces.FaceRecognitionBackbone("synthfaces"),
               "+ look swaps (scorer)": faces.load_recognizer()}
table = {name: {kind: metrics.identity_scores(frames, real.references, rec).mean().item()
                for kind, frames in candidates.items()} for name, rec in recognizers.items()}
print(f"{'':>20}" + "".join(f"{name:>24}" for name in table))
for kind in candidates:
    print(f"{kind:>20}" + "".join(f"{table[name][kind]:24.3f}" for name in table))

# %%
fig, ax = plt.subplots(figsize=(8, 3.2))
width = 0.27
for i, name in enumerate(table):
    ax.bar(np.arange(len(candidates)) + (i - 1) * width, list(table[name].values()), width, label=name)
ax.set_xticks(np.arange(len(candidates)), list(candidates), fontsize=8)
ax.set_ylim(-0.2, 1.2)
ax.axhline(0, color="k", lw=0.6)
ax.axhline(0.5, color="grey", lw=0.6, ls="--")
ax.set(ylabel="identity score", title="what each recognizer calls 'the same person'")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(figure_path("03_lookalike_scores.png"), dpi=80)

# %% [markdown]
# Read the three columns. The face check sends colour blocks and noise to 0 in all of them: without it, a
# recognizer maps any picture to *some* embedding, and colour blocks of the person would score high. The
# look-alike is the hard case. A recognizer that was never forced to tell apart two people with the same
# colours learns that hair and skin colour separate its training identities, which they mostly do. Hard
# negatives and colour jitter take part of that shortcut away; look swaps take most of the rest, because a
# class no longer has one look to learn. At 32x32 a look-alike's other face shape, eyes, nose and mouth differ
# by a few pixels: look at the picture above and ask yourself whether *you* would tell them apart at that
# size. The next cell measures each step person by person.

# %%
# per person, so the two recognizers are compared person by person: the effect with its standard error, read
# against the smallest difference in identity score that matters (metrics.MEANINGFUL_DIFFERENCE)
per_person = {name: metrics.identity_scores(look.frames, real.references, rec).mean(1)
              for name, rec in recognizers.items()}
names = list(recognizers)
for before, after in zip(names, names[1:]):
    gain = metrics.mean_and_se(per_person[before] - per_person[after])
    print(metrics.describe_effect(f"look-alike score, {before} - {after} ({len(person)} people)", *gain))
scorer_lookalike = table["+ look swaps (scorer)"]["look-alike"]
print(f"with the scorer the look-alike scores {scorer_lookalike:.2f}:",
      "above" if scorer_lookalike > 0.5 else "at or below",
      "0.5, the course's limit for a score that reads faces rather than colours")

# %% [markdown]
# ## What you measured, and a question
#
# You detected the astronaut's face, saw the vggface2 weights load or fail clearly, wrote
# `cosine_similarity_matrix`, and measured the synthfaces recognizer on people it never saw in training:
# ROC-AUC, EER and TAR above, and a ceiling far above the floor, both within a shot and across a cut. Then you
# tried to fool the identity score with a look-alike, colour blocks and noise, and saw what hard negatives,
# look swaps and a face check change.
#
# **Question 1:** the scorer reads the face and the encoder reads the whole look. What would happen to the
# video model if its identity tokens came from the scorer instead: which parts of a person could it still
# draw from the references alone, and how would you measure that without fooling yourself?
#
# **Question 2:** the ceiling across a cut is lower than within a shot. When notebook 10 plots a generated
# video's similarity to its reference frame by frame, a drop right after a cut could be drift or could be the
# cut itself. Which level would you normalise those frames with, and why would using the no-cut ceiling make
# the model look worse than it is?
