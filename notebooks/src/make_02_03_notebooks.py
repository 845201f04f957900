"""Write notebooks 02_synthetic_faces and 03_face_embeddings (no outputs) with nbformat.

    .venv/bin/python notebooks/src/make_02_03_notebooks.py
"""

from nbwriter import DEVICE, SETUP, code, md, write_notebook

# ----------------------------------------------------------------------------------------- 02_synthetic_faces
NB02 = [
    md("""
# 02 · Synthetic faces: a world where identity is known

To measure whether a video model keeps a character's face, we need many faces whose identity we know
exactly, in motion, with cuts, with the exact region of the face in every frame, and all of it offline and
fast on a CPU. Real face datasets cannot ship with a pip install, and they never tell you the ground truth.
So the course renders its own cartoon faces with `labkit.synthfaces`.

In this notebook you will be able to:
- render identities from an integer id, and tell **identity** (who it is) apart from **nuisance** (pose,
  expression, lighting, background, camera);
- make clips with smooth motion and **cuts**, with their exact face masks and reference images;
- write `box_to_mask` yourself (the exercise) and see how much a face *box* overstates the face *mask*;
- put 2 to 4 characters in one scene, load clips through a torch `Dataset`, and keep train and test
  identities apart;
- measure how fast the renderer is on your machine.
"""),
    code(SETUP),
    code(DEVICE),
    md("""
## Identities come from an integer

An identity is just an integer id. Every trait of the face (face shape, skin tone, hair style and colour,
eyes, brows, nose, mouth, ears, glasses, beard, earrings, a mole, freckles...) is a hash of that id, so id 7
is the same person on every machine and in every batch. Ids below 1,000,000 are **training** identities;
ids from 1,000,000 up are **held-out** identities that no model in the course is trained on. That is what
lets us say "the recognizer works on people it has never seen".
"""),
    code("""
import matplotlib.pyplot as plt
import torch

from labkit import synthfaces
from labkit.common import figure_path, image_strip, show_images, to_uint8

print("train ids:", synthfaces.train_ids(4).tolist(), "  held-out ids:", synthfaces.test_ids(4).tolist())
traits = synthfaces.identity_traits(synthfaces.train_ids(4))
print(len(traits), "traits, e.g.", sorted(traits)[:8])
for name in ("face_width", "hair_style", "glasses", "eye_size"):
    print(f"{name:>11}:", traits[name].numpy().round(3))
print("the same id gives the same traits in another batch:",
      torch.equal(synthfaces.identity_traits([9, 2])["skin_color"][1], traits["skin_color"][2]))
"""),
    md("""
## The identity grid: same person along a row

Each row below is one identity; each column is a fixed pose and expression (frontal, turned left and
right, looking up, talking with raised brows, a big smile, a blink, a slight turn). If the world is any good,
you can tell the rows apart at a glance and see the same person all along a row. The background and
lighting are random per image: they are nuisances too.
"""),
    code("""
n_ids = 4 if QUICK else 8
grid_ids = synthfaces.test_ids(n_ids)
grid = synthfaces.identity_grid(grid_ids)            # (n_ids * 8, 3, 64, 64)
fig, ax = plt.subplots(figsize=(10, 1.3 * n_ids))
ax.imshow(image_strip(grid, ncols=8))
ax.set_yticks([32 + 65 * i for i in range(n_ids)], [f"id {i}" for i in grid_ids.tolist()])
ax.set_xticks([32 + 65 * j for j in range(8)],
              ["front", "left", "right", "up", "talk", "smile", "blink", "turn"])
ax.set_title("rows: identities, columns: poses and expressions")
fig.tight_layout()
fig.savefig(figure_path("02_identity_grid.png"), dpi=80)
"""),
    md("""
## Nuisances, one at a time

`render_faces` samples random nuisances; any of them can be fixed with a keyword. Here one identity sweeps
one nuisance per row while the others stay still. Watch the yaw row closely: the eyes, nose and mouth slide
across the face and the far eye gets narrower, while the outline of the head barely moves. The face is
drawn on a sphere, so turning is not just a shift of the picture. A recognizer has to see through all of
this.
"""),
    code("""
candidates = synthfaces.test_ids(20)
plain = synthfaces.identity_traits(candidates)
clear = (plain["glasses"] == 0) & (plain["beard"] == 0)  # a face whose eyes and mouth are easy to follow
who = candidates[clear][:1].repeat(6)
still = dict(yaw=0.0, pitch=0.0, roll=0.0, smile=0.3, mouth_open=0.0, blink=0.0, brow_raise=0.0, zoom=1.0,
             shift_x=0.0, shift_y=0.0, light_strength=0.0, brightness=1.0)
sweeps = {
    "yaw": torch.linspace(-0.65, 0.65, 6),
    "pitch": torch.linspace(-0.25, 0.25, 6),
    "smile": torch.linspace(0, 1, 6),
    "blink": torch.linspace(0, 1, 6),
    "light_strength": torch.linspace(0, 0.5, 6),
    "zoom": torch.linspace(0.85, 1.2, 6),
}
rows = []
for name, values in sweeps.items():
    gen = torch.Generator().manual_seed(0)  # the same background in every row
    images, _ = synthfaces.render_faces(who, 64, gen, **{**still, name: values})
    rows.append(images)
titles = [f"{name} {v:.2f}" for name, values in sweeps.items() for v in values.tolist()]
fig = show_images(torch.cat(rows), titles=titles, ncols=6, size=1.5)
fig.savefig(figure_path("02_nuisances.png"), dpi=80)
"""),
    md("""
## Clips: motion, and a cut

A video model is trained and measured on clips. `make_clip` gives one identity moving smoothly (head turns,
blinks, smiles, talking) and, optionally, **cuts**: at a cut the camera, background and lighting jump, as
in an edited film, but the person stays the same. Keeping a face across a cut is harder than keeping it
within a shot, and the course measures both. Each clip also carries R **reference** images of the same
person in other poses and backgrounds: the model will be given these to know whom to draw.
"""),
    code("""
num_frames = 12
clip = synthfaces.make_clip(int(synthfaces.test_ids(1, offset=5)), num_frames=num_frames, size=64, num_refs=3,
                            num_cuts=1, generator=torch.Generator().manual_seed(2))
print("frames", tuple(clip.frames.shape), " masks", tuple(clip.masks.shape),
      " references", tuple(clip.references.shape), " new shot starts at frame", clip.cuts)
"""),
    code("""
fig, ax = plt.subplots(figsize=(12, 1.6))
ax.imshow(image_strip(clip.frames))
for c in clip.cuts:  # a red line between the last frame of one shot and the first of the next
    ax.axvline(c * 65 + 0.5, color="red", linewidth=3)
ax.set_xticks([32 + 65 * f for f in range(num_frames)], [str(f) for f in range(num_frames)])
ax.set_yticks([])
ax.set_title(f"one clip: frames 0-{num_frames - 1}, a cut (red line) before frame {clip.cuts[0]}")
fig.tight_layout()
fig.savefig(figure_path("02_clip_strip.png"), dpi=80)
fig = show_images(clip.references, titles=["reference 1", "reference 2", "reference 3"], size=1.5)
"""),
    md("""
## Exact face masks

Because we draw the faces, we also know exactly which pixels are face: `clip.masks` holds the coverage of
the face shape in every frame (values between 0 and 1 on the anti-aliased edge). Later notebooks use these
masks to limit identity attention to the face and to measure identity only where the face is. Below, the
mask is tinted red over each frame.
"""),
    code("""
def overlay(frames, masks, color=(1.0, 0.1, 0.1), alpha=0.55):
    # blend a colour into the frames where the mask is on; frames (F,3,H,W) in [-1,1], masks (F,H,W)
    tint = torch.tensor(color).view(1, 3, 1, 1) * 2 - 1
    return torch.lerp(frames, tint.expand_as(frames), alpha * masks.unsqueeze(1))


fig, ax = plt.subplots(figsize=(12, 1.6))
ax.imshow(image_strip(overlay(clip.frames, clip.masks)))
ax.axis("off")
ax.set_title("exact face masks (red) of the clip")
fig.tight_layout()
fig.savefig(figure_path("02_masks_overlay.png"), dpi=80)
print("fraction of each frame that is face:", clip.masks.mean(dim=(1, 2)).numpy().round(2))
"""),
    md("""
## Exercise: a mask from a box

On real photos we do not get exact masks. A face detector such as MTCNN (notebook 03) gives a **box**
`(x1, y1, x2, y2)` in pixel units, and the cheapest mask is "every pixel inside the box". Write
`my_box_to_mask(box, height, width)` that returns a float32 tensor of shape `(height, width)`:

- pixel (row `i`, column `j`) covers the square from `(j, i)` to `(j + 1, i + 1)`, so its **centre** is at
  `(j + 0.5, i + 0.5)`;
- the pixel is inside when `x1 <= j + 0.5 < x2` and `y1 <= i + 0.5 < y2` (`x` runs along columns, `y` along
  rows);
- parts of the box outside the image are simply cut off.

Why centres, and why `<` on the far edge? Then a box from 2 to 6 covers exactly 4 pixels, two boxes that
touch never share a pixel, and fractional boxes (detectors give those) are handled without rounding.

The cell below is a stub: **replace `raise NotImplementedError(...)` with your code** and run the check. It
prints PASS or FAIL for each case; until every case passes, the rest of the notebook uses labkit's own
implementation, so the notebook runs either way. After a failed check, `hint("box_to_mask")`
explains what the failing cases mean (ask again for a more specific hint), and `solution("box_to_mask")` shows a
worked solution.

The check tries your function on several boxes, including a tall thin one (x and y are not
interchangeable), edges exactly on pixel centres, a box partly outside the image and an empty box.
"""),
    code("""
from labkit.exercises import check, hint, solution


def my_box_to_mask(box, height, width):
    # TODO (exercise): a float (height, width) mask of the pixels whose centres lie in the box
    raise NotImplementedError("exercise box_to_mask: write this function, then run the cell")


# yours once every case passes, labkit's own until then: the notebook runs either way
my_box_to_mask = check("box_to_mask", my_box_to_mask).function
"""),
    md("""
### How much does a box overstate a face?

Take the tightest box around each exact mask, turn it back into a mask with your function, and compare the
two. The **IoU** (intersection over union) is 1 when they agree. A box also takes in background and hair
in the corners, so its IoU with the face is well below 1. Identity measured "inside the face box" therefore
always includes some background: keep that in mind when reading scores on real photos.
"""),
    code("""
def tight_box(mask, threshold=0.5):
    # (x1, y1, x2, y2) of the pixels where mask >= threshold, in pixel-edge units
    rows, cols = (mask >= threshold).nonzero(as_tuple=True)
    return [cols.min().item(), rows.min().item(), cols.max().item() + 1, rows.max().item() + 1]


exact = (clip.masks >= 0.5).float()
boxed = torch.stack([my_box_to_mask(tight_box(m), 64, 64) for m in clip.masks])
iou = (exact * boxed).sum(dim=(1, 2)) / torch.maximum(exact, boxed).sum(dim=(1, 2))
print("IoU of box mask and exact mask, per frame:", iou.numpy().round(2))
print(f"mean IoU {iou.mean():.3f}: the box takes in {1 / iou.mean() - 1:.0%} more pixels than the face")
fig = show_images(torch.cat([overlay(clip.frames[:4], exact[:4]), overlay(clip.frames[:4], boxed[:4], (1, 0.85, 0))]),
                  titles=["exact mask"] * 4 + ["box mask"] * 4, ncols=4, size=1.6)
fig.savefig(figure_path("02_box_vs_mask.png"), dpi=80)
"""),
    md("""
## Several characters in one scene

Notebook 09 teaches a model to keep several people apart. `make_scenes` puts 2 to 4 characters side by side:
each moves on its own, and they share the background, the lighting and the cuts. The masks have one channel
per character, `(B, F, C, H, W)`, so we always know whose face each pixel belongs to. Ask for more
characters than fit and you get a clear error instead of unreadable thumbnails.
"""),
    code("""
scene_ids = torch.stack([synthfaces.test_ids(3, offset=20)])          # (B=1, C=3)
scene = synthfaces.make_scenes(scene_ids, num_frames=4, size=96, num_refs=2, num_cuts=0,
                               generator=torch.Generator().manual_seed(3))
print("frames", tuple(scene.frames.shape), " masks", tuple(scene.masks.shape),
      " references", tuple(scene.references.shape))
try:
    synthfaces.make_scenes(torch.stack([synthfaces.test_ids(4)]), size=48)
except ValueError as e:
    print("too many characters:", e)
"""),
    code("""
colours = torch.tensor([[1.0, 0.15, 0.15], [0.15, 0.8, 0.15], [0.2, 0.4, 1.0]])
masks = scene.masks[0]                                               # (F, C, H, W)
painted = scene.frames[0]
for c in range(masks.shape[1]):
    painted = overlay(painted, masks[:, c], tuple(colours[c].tolist()), alpha=0.5)
fig = show_images(torch.cat([scene.frames[0], painted]), titles=[f"frame {f}" for f in range(4)] +
                  [f"masks, frame {f}" for f in range(4)], ncols=4, size=2.2)
fig.savefig(figure_path("02_scene.png"), dpi=80)
print("pixels claimed by two characters at once:", int((masks.sum(dim=1) > 1 + 1e-5).sum()))
"""),
    md("""
## A torch Dataset, and a clean train/test split

Training (notebook 08) reads clips through `ClipDataset`. Item `i` depends only on the dataset's seed and
`i`, never on the global random state, so a `DataLoader` with several worker processes gives exactly the
same clips as a single process, run after run. The recognizer and the video model are trained on train ids
only; every number the course reports is measured on held-out ids.
"""),
    code("""
n_train = 32 if QUICK else 256
train_set = synthfaces.ClipDataset(synthfaces.train_ids(n_train), num_frames=8, size=64, num_refs=2,
                                   num_cuts=1, seed=0)
item = train_set[3]
print(len(train_set), "clips;", {k: tuple(v.shape) if torch.is_tensor(v) else v for k, v in item.items()})
torch.manual_seed(1234)  # changing the global random state must not change item 3
print("item 3 is the same when read again:", torch.equal(train_set[3]["frames"], item["frames"]))
loader = torch.utils.data.DataLoader(train_set, batch_size=8, shuffle=True)
batch = next(iter(loader))
print("a batch of frames:", tuple(batch["frames"].shape), " cuts per clip:", batch["cuts"].sum(1).tolist())
"""),
    code("""
train_id_set = set(synthfaces.train_ids(n_train).tolist())
test_id_set = set(synthfaces.test_ids(n_train).tolist())
print(f"train ids {min(train_id_set)}..{max(train_id_set)}, held-out ids {min(test_id_set)}..{max(test_id_set)}, "
      f"shared: {len(train_id_set & test_id_set)}")
"""),
    md("""
## Measured: how fast is the renderer?

A whole batch is rendered with a few dozen tensor operations, so the renderer should keep up with training
on a CPU. `synthfaces.benchmark` times `render` and `make_clips` (best of several runs). Wall-clock time
drops when other programs share your cores; the CPU-time figure (one thread) does not, and two cores
running one worker each render about twice that.
"""),
    code("""
bench = synthfaces.benchmark(batch=128, size=64, repeats=3 if QUICK else 7)
print(f"render:     {bench['render_fps']:.0f} frames/s wall clock ({bench['threads']} threads, batch {bench['batch']})")
print(f"make_clips: {bench['clip_fps']:.0f} frames/s wall clock")
print(f"render, one thread: {bench['render_fps_per_core']:.0f} frames per CPU-second "
      f"(about {2 * bench['render_fps_per_core']:.0f} frames/s on two free cores)")
print(f"mean IoU box vs exact mask: {iou.mean():.3f}")
"""),
    md("""
## What you measured, and a question

You rendered identities, swept each nuisance, made a clip with a cut and its exact masks, wrote
`box_to_mask`, measured how far a box mask is from the true face (the IoU above), built a three-character
scene and a deterministic Dataset, and timed the renderer.

**Question:** a cut changes the camera, background and lighting but not the person. Which of the nuisances
you swept do you expect to hurt a face recognizer most, and would a recognizer that only ever saw frontal,
evenly lit faces still match the two shots of the clip above? (Notebook 03 measures exactly this.)
"""),
]


# ----------------------------------------------------------------------------------------- 03_face_embeddings
NB03 = [
    md("""
# 03 · Face embeddings: detecting faces and telling people apart

Every identity score in this course comes from a **face recognizer** f: a frozen network that maps a face
image to a 512-d unit vector, such that two photos of the same person point the same way. This notebook
builds the measuring instrument and checks that it is trustworthy before anything else relies on it.

In this notebook you will be able to:
- find a face in a real photo with **MTCNN** and get its box, a 160x160 crop and a mask;
- load facenet's **InceptionResnetV1** (vggface2 weights) when they are available, and understand the clear
  error you get offline;
- embed synthetic faces with the course's own **synthfaces recognizer**;
- write `cosine_similarity_matrix` yourself (the exercise), draw a similarity heatmap and a 2-D map of the
  embeddings;
- measure the recognizer the way face verification papers do: **ROC-AUC, EER, TAR at FAR=1e-3**, and the
  **ceiling** and **floor** that every later similarity is read against.
"""),
    code(SETUP),
    code(DEVICE),
    md("""
## MTCNN on a real photo

MTCNN is a small cascade of three CNNs that proposes face boxes, refines them and scores them. Its weights
ship inside the facenet-pytorch wheel, so it works offline. `labkit.faces.detect_faces` wraps it and returns
the boxes `(x1, y1, x2, y2)`, a probability per face, a 160x160 crop (the box cut out and resized to the
input size facenet's recognizer expects: cropped, not *aligned*; nothing rotates the face to level the eyes)
and a mask built from the box with `box_to_mask` (the function you wrote in 02).
We try it on the astronaut photo that ships with scikit-image.
"""),
    code("""
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
from skimage import data

from labkit import faces, synthfaces
from labkit.common import figure_path, show_images, to_uint8

astronaut = data.astronaut()                       # (512, 512, 3) uint8
det = faces.detect_faces(astronaut)
print(det.message, "| boxes", det.boxes.round().tolist(), "| probability", det.probs.round(decimals=4).tolist())
print("crops", tuple(det.crops.shape), " masks", tuple(det.masks.shape))
"""),
    code("""
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
"""),
    md("""
What if there is no face? MTCNN's own batched code raises an obscure error when some images in a batch
have no face. `detect_faces` handles images one at a time and returns an empty result with a message, so
your code can check `len(det)` instead of catching exceptions.
"""),
    code("""
blank = np.full((200, 200, 3), 128, np.uint8)
with warnings.catch_warnings(record=True):
    warnings.simplefilter("always")
    empty = faces.detect_faces([astronaut, blank])
print(len(empty), "face(s);", empty.message, "| faces come from images", empty.image_index.tolist())
"""),
    md("""
## InceptionResnetV1 with vggface2 weights

facenet-pytorch's `InceptionResnetV1`, trained on the VGGFace2 dataset, is the recognizer many identity
papers use. Its weights (about 110 MB) are not inside the wheel: facenet downloads them on first use into
its cache. On an offline machine (or a CI runner without network) that cannot work, so
`FaceRecognitionBackbone("vggface2")` gives up after a few seconds with an error that says where to put the
file. We try it, and catch the error if it comes.
"""),
    code("""
t0 = time.time()
try:
    vgg = faces.FaceRecognitionBackbone("vggface2", device=device)
    with torch.no_grad():
        e = vgg(det.crops.to(device))
    print(f"loaded in {time.time() - t0:.1f} s; the astronaut's embedding: shape {tuple(e.shape)}, "
          f"norm {e.norm():.3f}")
except (RuntimeError, ValueError) as err:  # offline (RuntimeError) or a corrupt cached file (ValueError)
    print(f"no vggface2 weights after {time.time() - t0:.1f} s:\\n{err}")
"""),
    md("""
If you saw the error: nothing is broken. It says which file to download and where to put it (or how to pass
a path). For the rest of the course we do not need it: faces here are synthetic, and a recognizer trained
on them works offline.

## The synthfaces recognizer

`FaceRecognitionBackbone("synthfaces")` is a small CNN (a few MB, in `data/`) trained with an ArcFace loss on
training identities only, with blur, noise and down-scaling so that it also copes with the blurry frames a
small video model produces. It accepts images of any size and returns unit-norm 512-d embeddings. It is
frozen: in eval mode, no gradients to its weights. It is a measuring instrument, not something to train.

We render several held-out identities, each in several poses and expressions.
"""),
    code("""
backbone = faces.load_recognizer("synthfaces", str(device))
n_ids, n_views = (6, 5) if QUICK else (10, 6)
ids = synthfaces.test_ids(n_ids, offset=40).repeat_interleave(n_views)   # id0 x n_views, id1 x n_views, ...
images, _ = synthfaces.render_faces(ids, 64, torch.Generator().manual_seed(0))
with torch.no_grad():
    emb = backbone(images.to(device)).cpu()
print("images", tuple(images.shape), "-> embeddings", tuple(emb.shape), " norms", emb.norm(dim=1)[:4].numpy().round(4))
fig = show_images(images[: 3 * n_views], ncols=n_views, size=1.3,
                  suptitle="three of the identities, each in several views")
"""),
    md("""
## Exercise: the cosine similarity matrix

To compare every face with every other face we need the cosine similarity of every row of `a` (N, D) with
every row of `b` (M, D): an (N, M) matrix. Write `my_cosine_similarity_matrix(a, b)`:

- divide each **row** of `a` and of `b` by its length (the norm along `dim=1`), so that each row is a unit
  vector;
- then one matrix product `a @ b.T` gives all N x M dot products, which are now cosines;
- guard against a zero row (clamp the norm to a small eps) so it gives 0 instead of nan.

Why normalise even though the recognizer already returns unit vectors? Because your function will also be
used on averaged embeddings and on identity tokens, which are not unit length: a longer vector must not
look "more similar".

The cell below is a stub: **replace `raise NotImplementedError(...)` with your code** and run the check. It
prints PASS or FAIL for each case; until every case passes, the rest of the notebook uses labkit's own
implementation, so the notebook runs either way. After a failed check, `hint("cosine_similarity_matrix")`
explains what the failing cases mean (ask again for a more specific hint), and
`solution("cosine_similarity_matrix")` shows a worked solution.

The check compares your function with labkit's on rows of very different lengths, N != M, N = 1 and a
zero vector.
"""),
    code("""
from labkit.exercises import check, hint, solution


def my_cosine_similarity_matrix(a, b, eps=1e-8):
    # TODO (exercise): the (N, M) cosine similarities of every row of a with every row of b
    raise NotImplementedError("exercise cosine_similarity_matrix: write this function, then run the cell")


# yours once every case passes, labkit's own until then: the notebook runs either way
my_cosine_similarity_matrix = check("cosine_similarity_matrix", my_cosine_similarity_matrix).function
"""),
    md("""
### The similarity heatmap

With the faces sorted by identity, the same person forms a bright block on the diagonal (same identity,
other pose or expression) and everything off the blocks should be dark (different identities).
"""),
    code("""
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
"""),
    md("""
### A 2-D map of the embeddings

512 dimensions cannot be drawn, but a PCA projection onto the two directions of largest variance shows
the structure: each identity should form its own tight cluster, far from the others.
"""),
    code("""
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
"""),
    md("""
## Measured: is the recognizer good enough to be our instrument?

Face verification asks "are these two images the same person?" by thresholding their cosine similarity.
Over many **genuine** pairs (same identity) and **impostor** pairs (different identities):

- **ROC-AUC**: the chance that a random genuine pair scores above a random impostor pair (1 is perfect);
- **EER** (equal error rate): the threshold where wrongly rejected genuine pairs and wrongly accepted
  impostors are equally frequent; lower is better;
- **TAR at FAR=1e-3**: the fraction of genuine pairs accepted when only 1 impostor pair in 1000 may pass.

We render held-out identities with random nuisances (every image its own pose, lighting, background and
camera, so pairs span "cuts"), and score every pair with your function.
"""),
    code("""
n_verify, per_id = (60, 3) if QUICK else (200, 4)
v_ids = synthfaces.test_ids(n_verify, offset=1000).repeat_interleave(per_id)
v_images, _ = synthfaces.render_faces(v_ids, 64, torch.Generator().manual_seed(1))
v_emb = faces.embed(backbone, v_images)
v_sim = my_cosine_similarity_matrix(v_emb, v_emb)
pair = torch.triu(torch.ones_like(v_sim, dtype=torch.bool), diagonal=1)      # each pair once
same_id = v_ids[:, None] == v_ids[None, :]
genuine, impostor = v_sim[same_id & pair].numpy(), v_sim[~same_id & pair].numpy()
report = faces.verification_metrics(genuine, impostor)
print(f"{len(genuine)} genuine and {len(impostor)} impostor pairs of {n_verify} held-out identities")
print(f"ROC-AUC {report['roc_auc']:.4f}   EER {100 * report['eer']:.2f}%   "
      f"TAR@FAR=1e-3 {100 * report['tar_at_far_1e-3']:.1f}%")
"""),
    code("""
fig, ax = plt.subplots(figsize=(7, 3.2))
bins = np.linspace(-0.4, 1, 50)
ax.hist(impostor, bins=bins, density=True, alpha=0.6, label="impostor pairs (different identities)")
ax.hist(genuine, bins=bins, density=True, alpha=0.6, label="genuine pairs (same identity)")
ax.set(xlabel="cosine similarity", ylabel="density", title=f"EER {100 * report['eer']:.2f}%")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(figure_path("03_verification_hist.png"), dpi=80)
"""),
    md("""
## The ceiling and the floor

A raw cosine of, say, 0.6 between a generated frame and a reference means little on its own. Every later
notebook reads similarities against two measured levels of this recognizer:

- the **ceiling**: real rendered frames of the same identity (other pose, expression, blink) within one
  shot, and the same across a **cut** (camera, background and lighting changed);
- the **floor**: frames of different identities.

`normalised identity = (sim - floor) / (ceiling - floor)` is then 1 for "as good as the real person" and 0
for "a stranger".
"""),
    code("""
levels = faces.identity_levels(backbone, size=64, num_identities=24 if QUICK else 48, num_frames=8)
print(f"no cut:     ceiling {levels['ceiling']:.3f}   floor {levels['floor']:.3f}   gap {levels['gap']:.3f}")
print(f"across cut: ceiling {levels['ceiling_cut']:.3f}   floor {levels['floor_cut']:.3f}   "
      f"gap {levels['gap_cut']:.3f}")
print(f"verification: ROC-AUC {report['roc_auc']:.4f}, EER {100 * report['eer']:.2f}%, "
      f"TAR@FAR=1e-3 {100 * report['tar_at_far_1e-3']:.1f}%")
"""),
    md("""
## Does your metric measure identity, or hair colour?

A score is only as honest as what it cannot be fooled by. Before trusting it, feed it things that should
score **low**:

- a **look-alike**: another person drawn with *this* person's skin, hair colour and style, brows, lips, eyes'
  colour and accessories, but their own face shape, eyes, nose, mouth and ears
  (`synthfaces.identity_traits(ids, look_from=person)`);
- the person's real frames reduced to an **8x8 grid of colour blocks**: every colour is right, no face is left;
- a **flat colour** and **pure noise**.

`labkit.metrics.identity_scores(frames, references)` is the course's one answer to "how much is each frame
this person?". It normalises the cosine between the recognizer embeddings of frame and references between
the **floor** (strangers, 0) and the **ceiling** (real frames after a cut, 1), and multiplies by the
recognizer's probability that the frame is a **face** at all: a recognizer maps *any* picture to some
embedding, so it needs a second head trained to say "this is not a face" (on colour blocks, patch mosaics,
mush, noise and flat colour made from real faces).
"""),
    code("""
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
"""),
    md("""
Now score every kind of frame against the person's three references, with two recognizers: a **baseline**
trained the plain way (ArcFace on rendered identities, no look-alikes, no colour changes) and the
**shipped** one, trained with *hard negatives*: three quarters of its training identities come in families
of four that share one look and differ only in face geometry, and 70% of its training images get random
hue, saturation and brightness changes, so colour alone cannot tell its classes apart.
"""),
    code("""
recognizers = {"baseline (no hard negatives)": faces.FaceRecognitionBackbone("synthfaces-baseline"),
               "shipped (hard negatives)": faces.load_recognizer()}
table = {name: {kind: metrics.identity_scores(frames, real.references, rec).mean().item()
                for kind, frames in candidates.items()} for name, rec in recognizers.items()}
print(f"{'':>20}" + "".join(f"{name:>32}" for name in table))
for kind in candidates:
    print(f"{kind:>20}" + "".join(f"{table[name][kind]:32.3f}" for name in table))
"""),
    code("""
fig, ax = plt.subplots(figsize=(8, 3.2))
width = 0.38
for i, name in enumerate(table):
    ax.bar(np.arange(len(candidates)) + (i - 0.5) * width, list(table[name].values()), width, label=name)
ax.set_xticks(np.arange(len(candidates)), list(candidates), fontsize=8)
ax.set_ylim(-0.2, 1.2)
ax.axhline(0, color="k", lw=0.6)
ax.set(ylabel="identity score", title="what each recognizer calls 'the same person'")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(figure_path("03_lookalike_scores.png"), dpi=80)
"""),
    md("""
Read the two columns. The face check sends colour blocks and noise to 0 in both: without it, a
recognizer maps any picture to *some* embedding, and colour blocks of the person would score high. The
look-alike is the hard case. A recognizer that was never forced to tell apart two people with the same
colours learns that hair and skin colour separate its training identities, which they mostly do. Hard
negatives and colour jitter take part of that shortcut away; how much, the next cell measures. At 32x32 a
look-alike's other face shape, eyes, nose and mouth differ by a few pixels: look at the picture above and
ask yourself whether *you* would tell them apart at that size.
"""),
    code("""
# per person, so the two recognizers are compared person by person: the effect with its standard error, read
# against the smallest difference in identity score that matters (metrics.MEANINGFUL_DIFFERENCE)
per_person = {name: metrics.identity_scores(look.frames, real.references, rec).mean(1)
              for name, rec in recognizers.items()}
gain = metrics.mean_and_se(per_person["baseline (no hard negatives)"] - per_person["shipped (hard negatives)"])
print(metrics.describe_effect(f"look-alike score, baseline - shipped ({len(person)} people)", *gain))
print("the look-alike still scores", "above" if table["shipped (hard negatives)"]["look-alike"] > 0.5 else "below",
      "0.5, the course's limit for a score that reads faces rather than colours")
"""),
    md("""
## What you measured, and a question

You detected the astronaut's face, saw the vggface2 weights load or fail clearly, wrote
`cosine_similarity_matrix`, and measured the synthfaces recognizer on people it never saw in training:
ROC-AUC, EER and TAR above, and a ceiling far above the floor, both within a shot and across a cut. Then you
tried to fool the identity score with a look-alike, colour blocks and noise, and saw what hard negatives and
a face check change.

**Question 1:** the look-alike shares everything but the geometry of the face. What would you change to make
the recognizer look harder at that geometry: more pixels, more look-alike families, a loss on look-alike
pairs, or a world whose faces differ more? How would you check that it worked without fooling yourself?

**Question 2:** the ceiling across a cut is lower than within a shot. When notebook 10 plots a generated
video's similarity to its reference frame by frame, a drop right after a cut could be drift or could be the
cut itself. Which level would you normalise those frames with, and why would using the no-cut ceiling make
the model look worse than it is?
"""),
]


if __name__ == "__main__":
    for name, cells in [("02_synthetic_faces", NB02), ("03_face_embeddings", NB03)]:
        write_notebook(cells, name)
