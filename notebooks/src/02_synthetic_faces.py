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
# # 02 · Synthetic faces: a world where identity is known
#
# To measure whether a video model keeps a character's face, we need many faces whose identity we know
# exactly, in motion, with cuts, with the exact region of the face in every frame, and all of it offline and
# fast on a CPU. Real face datasets cannot ship with a pip install, and they never tell you the ground truth.
# So the course renders its own cartoon faces with `labkit.synthfaces`.
#
# In this notebook you will be able to:
# - render identities from an integer id, and tell **identity** (who it is) apart from **nuisance** (pose,
#   expression, lighting, background, camera);
# - make clips with smooth motion and **cuts**, with their exact face masks and reference images;
# - write `box_to_mask` yourself (the exercise) and see how much a face *box* overstates the face *mask*;
# - put 2 to 4 characters in one scene, load clips through a torch `Dataset`, and keep train and test
#   identities apart;
# - measure how fast the renderer is on your machine.

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
# ## Identities come from an integer
#
# An identity is just an integer id. Every trait of the face (face shape, skin tone, hair style and colour,
# eyes, brows, nose, mouth, ears, glasses, beard, earrings, a mole, freckles...) is a hash of that id, so id 7
# is the same person on every machine and in every batch. Ids below 1,000,000 are **training** identities;
# ids from 1,000,000 up are **held-out** identities that no model in the course is trained on. That is what
# lets us say "the recognizer works on people it has never seen".

# %%
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

# %% [markdown]
# ## The identity grid: same person along a row
#
# Each row below is one identity; each column is a fixed pose and expression (frontal, turned left and
# right, looking up, talking with raised brows, a big smile, a blink, a slight turn). If the world is any good,
# you can tell the rows apart at a glance and see the same person all along a row. The background and
# lighting are random per image: they are nuisances too.

# %%
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

# %% [markdown]
# ## Nuisances, one at a time
#
# `render_faces` samples random nuisances; any of them can be fixed with a keyword. Here one identity sweeps
# one nuisance per row while the others stay still. Watch the yaw row closely: the eyes, nose and mouth slide
# across the face and the far eye gets narrower, while the outline of the head barely moves. The face is
# drawn on a sphere, so turning is not just a shift of the picture. A recognizer has to see through all of
# this.

# %%
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

# %% [markdown]
# ## Clips: motion, and a cut
#
# A video model is trained and measured on clips. `make_clip` gives one identity moving smoothly (head turns,
# blinks, smiles, talking) and, optionally, **cuts**: at a cut the camera, background and lighting jump, as
# in an edited film, but the person stays the same. Keeping a face across a cut is harder than keeping it
# within a shot, and the course measures both. Each clip also carries R **reference** images of the same
# person in other poses and backgrounds: the model will be given these to know whom to draw.

# %%
num_frames = 12
clip = synthfaces.make_clip(int(synthfaces.test_ids(1, offset=5)), num_frames=num_frames, size=64, num_refs=3,
                            num_cuts=1, generator=torch.Generator().manual_seed(2))
print("frames", tuple(clip.frames.shape), " masks", tuple(clip.masks.shape),
      " references", tuple(clip.references.shape), " new shot starts at frame", clip.cuts)

# %%
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


# %% [markdown]
# ## Exact face masks
#
# Because we draw the faces, we also know exactly which pixels are face: `clip.masks` holds the coverage of
# the face shape in every frame (values between 0 and 1 on the anti-aliased edge). Later notebooks use these
# masks to limit identity attention to the face and to measure identity only where the face is. Below, the
# mask is tinted red over each frame.

# %%
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

# %% [markdown]
# ## Exercise: a mask from a box
#
# On real photos we do not get exact masks. A face detector such as MTCNN (notebook 03) gives a **box**
# `(x1, y1, x2, y2)` in pixel units, and the cheapest mask is "every pixel inside the box". Write
# `my_box_to_mask(box, height, width)` that returns a float32 tensor of shape `(height, width)`:
#
# - pixel (row `i`, column `j`) covers the square from `(j, i)` to `(j + 1, i + 1)`, so its **centre** is at
#   `(j + 0.5, i + 0.5)`;
# - the pixel is inside when `x1 <= j + 0.5 < x2` and `y1 <= i + 0.5 < y2` (`x` runs along columns, `y` along
#   rows);
# - parts of the box outside the image are simply cut off.
#
# Why centres, and why `<` on the far edge? Then a box from 2 to 6 covers exactly 4 pixels, two boxes that
# touch never share a pixel, and fractional boxes (detectors give those) are handled without rounding.
#
# The cell below is a stub: **replace `raise NotImplementedError(...)` with your code** and run the check. It
# prints PASS or FAIL for each case; until every case passes, the rest of the notebook uses labkit's own
# implementation, so the notebook runs either way. After a failed check, `hint("box_to_mask")`
# explains what the failing cases mean (ask again for a more specific hint), and `solution("box_to_mask")` shows a
# worked solution.
#
# The check tries your function on several boxes, including a tall thin one (x and y are not
# interchangeable), edges exactly on pixel centres, a box partly outside the image and an empty box.

# %%
from labkit.exercises import check, hint, solution


def my_box_to_mask(box, height, width):
    # TODO (exercise): a float (height, width) mask of the pixels whose centres lie in the box
    raise NotImplementedError("exercise box_to_mask: write this function, then run the cell")


# yours once every case passes, labkit's own until then: the notebook runs either way
my_box_to_mask = check("box_to_mask", my_box_to_mask).function


# %% [markdown]
# ### How much does a box overstate a face?
#
# Take the tightest box around each exact mask, turn it back into a mask with your function, and compare the
# two. The **IoU** (intersection over union) is 1 when they agree. A box also takes in background and hair
# in the corners, so its IoU with the face is well below 1. Identity measured "inside the face box" therefore
# always includes some background: keep that in mind when reading scores on real photos.

# %%
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

# %% [markdown]
# ## Several characters in one scene
#
# Notebook 09 teaches a model to keep several people apart. `make_scenes` puts 2 to 4 characters side by side:
# each moves on its own, and they share the background, the lighting and the cuts. The masks have one channel
# per character, `(B, F, C, H, W)`, so we always know whose face each pixel belongs to. Ask for more
# characters than fit and you get a clear error instead of unreadable thumbnails.

# %%
scene_ids = torch.stack([synthfaces.test_ids(3, offset=20)])          # (B=1, C=3)
scene = synthfaces.make_scenes(scene_ids, num_frames=4, size=96, num_refs=2, num_cuts=0,
                               generator=torch.Generator().manual_seed(3))
print("frames", tuple(scene.frames.shape), " masks", tuple(scene.masks.shape),
      " references", tuple(scene.references.shape))
try:
    synthfaces.make_scenes(torch.stack([synthfaces.test_ids(4)]), size=48)
except ValueError as e:
    print("too many characters:", e)

# %%
colours = torch.tensor([[1.0, 0.15, 0.15], [0.15, 0.8, 0.15], [0.2, 0.4, 1.0]])
masks = scene.masks[0]                                               # (F, C, H, W)
painted = scene.frames[0]
for c in range(masks.shape[1]):
    painted = overlay(painted, masks[:, c], tuple(colours[c].tolist()), alpha=0.5)
fig = show_images(torch.cat([scene.frames[0], painted]), titles=[f"frame {f}" for f in range(4)] +
                  [f"masks, frame {f}" for f in range(4)], ncols=4, size=2.2)
fig.savefig(figure_path("02_scene.png"), dpi=80)
print("pixels claimed by two characters at once:", int((masks.sum(dim=1) > 1 + 1e-5).sum()))

# %% [markdown]
# ## A torch Dataset, and a clean train/test split
#
# Training (notebook 08) reads clips through `ClipDataset`. Item `i` depends only on the dataset's seed and
# `i`, never on the global random state, so a `DataLoader` with several worker processes gives exactly the
# same clips as a single process, run after run. The recognizer and the video model are trained on train ids
# only; every number the course reports is measured on held-out ids.

# %%
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

# %%
train_id_set = set(synthfaces.train_ids(n_train).tolist())
test_id_set = set(synthfaces.test_ids(n_train).tolist())
print(f"train ids {min(train_id_set)}..{max(train_id_set)}, held-out ids {min(test_id_set)}..{max(test_id_set)}, "
      f"shared: {len(train_id_set & test_id_set)}")

# %% [markdown]
# ## Measured: how fast is the renderer?
#
# A whole batch is rendered with a few dozen tensor operations, so the renderer should keep up with training
# on a CPU. `synthfaces.benchmark` times `render` and `make_clips` (best of several runs). Wall-clock time
# drops when other programs share your cores; the CPU-time figure (one thread) does not, and two cores
# running one worker each render about twice that.

# %%
bench = synthfaces.benchmark(batch=128, size=64, repeats=3 if QUICK else 7)
print(f"render:     {bench['render_fps']:.0f} frames/s wall clock ({bench['threads']} threads, batch {bench['batch']})")
print(f"make_clips: {bench['clip_fps']:.0f} frames/s wall clock")
print(f"render, one thread: {bench['render_fps_per_core']:.0f} frames per CPU-second "
      f"(about {2 * bench['render_fps_per_core']:.0f} frames/s on two free cores)")
print(f"mean IoU box vs exact mask: {iou.mean():.3f}")

# %% [markdown]
# ## What you measured, and a question
#
# You rendered identities, swept each nuisance, made a clip with a cut and its exact masks, wrote
# `box_to_mask`, measured how far a box mask is from the true face (the IoU above), built a three-character
# scene and a deterministic Dataset, and timed the renderer.
#
# **Question:** a cut changes the camera, background and lighting but not the person. Which of the nuisances
# you swept do you expect to hurt a face recognizer most, and would a recognizer that only ever saw frontal,
# evenly lit faces still match the two shots of the clip above? (Notebook 03 measures exactly this.)
