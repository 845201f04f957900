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
# # 00 · Welcome to the Character Consistency Lab
#
# AI video models draw every frame by removing noise step by step, and every step samples fresh noise. A
# character's face therefore wanders a little from frame to frame and a lot across cuts: the film-makers call
# it **identity drift**. This course builds, trains and measures the mechanisms that video models use against
# it, one notebook and one `labkit` module at a time.
#
# **In this notebook you will be able to:**
# 1. check that your set-up has everything the course needs (torch, your device, ffmpeg, diffusers, facenet-pytorch);
# 2. see identity drift in one picture, and read it as a number: the cosine similarity of each frame's face
#    embedding to the first frame's;
# 3. find a real face in a photo with facenet-pytorch's MTCNN and get the 160x160 crop that face recognizers eat.
#
# It runs in well under a minute on a laptop CPU.

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
from labkit.common import QUICK, get_device, seed_everything

device = get_device()
seed_everything(0)
print(device, "quick mode" if QUICK else "normal mode")

# %% [markdown]
# ## 1. Your set-up
#
# The kit needs a handful of libraries. `environment_report()` looks each one up and tells you which device
# the notebooks will use: `cuda` if you have an NVIDIA GPU, `mps` on Apple silicon, `cpu` otherwise. Everything
# in the course runs on a CPU; a GPU only makes training faster. Without the `ffmpeg` program, videos are shown
# as GIFs instead of MP4s.

# %%
from labkit.common import environment_report

report = environment_report()
for name, value in report.items():
    print(f"{name:>16}: {value}")
missing = [name for name, value in report.items() if value == "MISSING"]
assert not missing, f"install these first: {missing}"

# %% [markdown]
# ## 2. The problem in one picture
#
# We need faces whose identity we know exactly. `labkit.synthfaces` draws cartoon faces from an identity
# seed: the same seed always gives the same person (face shape, skin, hair, eyes, glasses, ...), while pose,
# expression, lighting and background are *nuisances* that may change freely.
#
# To see what drift looks like, we let a person's identity traits take a small random step at every frame, the
# way a sampler's noise nudges a generated face. The top row keeps the identity fixed; the bottom row drifts.
# Notebook 02 builds this world properly; here we only use it.

# %%
import torch
from labkit import synthfaces

NUM_FRAMES = 12 if QUICK else 16
person = synthfaces.test_ids(1)  # a held-out identity: no model in this course ever trained on it
traits = synthfaces.identity_traits(person)
motion = synthfaces.sample_nuisances(NUM_FRAMES, generator=torch.Generator().manual_seed(1),
                                     yaw=torch.linspace(-0.4, 0.4, NUM_FRAMES))
shot = {k: motion[k][:1].expand_as(motion[k]) for k in
        ["bg_color", "bg_color2", "bg_angle", "bg_shapes", "bg_shape_color", "light_angle", "zoom"]}
motion.update(shot)  # one shot: the same background, light and camera in every frame


def drifting_traits(traits, num_frames, drift, seed=0):
    """Each continuous trait takes a random-walk step of relative size `drift` per frame.

    Categorical traits (hair style, glasses, ...) stay: drift first shows in proportions and colours.
    """
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, value in traits.items():
        frames = value.expand(num_frames, *value.shape[1:]).clone()
        if value.is_floating_point() and not ((value == 0) | (value == 1)).all():
            steps = torch.randn(frames.shape, generator=g) * drift
            steps[0] = 0
            frames = frames * (1 + steps.cumsum(0))
            if frames.dim() == 2:  # colours stay colours
                frames = frames.clamp(0, 1)
        out[name] = frames
    return out


def render_clip(drift, seed=0):
    frame_traits = drifting_traits(traits, NUM_FRAMES, drift, seed)
    frames, masks = synthfaces.render(frame_traits, motion, size=64)
    return frames


stable, drifting = render_clip(0.0), render_clip(0.06)
print(stable.shape, "frames in [-1, 1]:", float(stable.min()), float(stable.max()))

# %% [markdown]
# A face recognizer turns a face into a 512-number embedding of unit length; the cosine similarity of two
# embeddings is high for one person and low for two. The kit ships a small recognizer trained on synthetic
# faces (notebook 03 trains and tests it). Reading each frame against the first one turns drift into a curve.

# %%
import matplotlib.pyplot as plt
from labkit.common import figure_path, image_strip
from labkit.faces import FaceRecognitionBackbone

recognizer = FaceRecognitionBackbone("synthfaces")


@torch.no_grad()
def similarity_to_first(frames):
    emb = recognizer(frames)
    return (emb @ emb[0]).numpy()


sim_stable, sim_drift = similarity_to_first(stable), similarity_to_first(drifting)
fig, axes = plt.subplots(3, 1, figsize=(10, 5.6), gridspec_kw={"height_ratios": [1, 1, 1.4]})
axes[0].imshow(image_strip(stable))
axes[0].set_title("identity held: same person in every frame")
axes[1].imshow(image_strip(drifting))
axes[1].set_title("identity drifting: a small random step per frame")
for ax in axes[:2]:
    ax.axis("off")
axes[2].plot(sim_stable, "o-", label="held")
axes[2].plot(sim_drift, "o-", label="drifting")
axes[2].set(xlabel="frame", ylabel="cosine to frame 0", ylim=(-0.1, 1.05))
axes[2].legend()
fig.tight_layout()
fig.savefig(figure_path("00_drift_in_one_picture.png"), dpi=80)
print(f"last frame vs first: held {sim_stable[-1]:.2f}, drifting {sim_drift[-1]:.2f}")

# %% [markdown]
# Notice that the held row is not at exactly 1.0 either: the head turns, and even a good recognizer's embedding
# moves a little with pose. That is why later notebooks read every similarity against a **ceiling** (same person,
# other nuisances) and a **floor** (different people).
#
# ### Try it: how much drift can you see?
#
# Move the slider. It sets the size of the per-frame random step. Watch the strip and the readout: at what step
# size does the person stop looking like the same person to *you*? Does the recognizer agree?

# %%
import io

import ipywidgets as widgets
from IPython.display import display
from PIL import Image

drift_slider = widgets.FloatSlider(value=0.02, min=0.0, max=0.15, step=0.01, description="drift",
                                   continuous_update=False, readout_format=".2f")
readout = widgets.HTML()
strip_view = widgets.Image(format="png")


def png_bytes(picture, scale=2):
    """A uint8 picture (H, W, 3) as PNG bytes, enlarged so that 64x64 faces are easy to see."""
    image = Image.fromarray(picture)
    buffer = io.BytesIO()
    image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


def update(change=None):
    frames = render_clip(drift_slider.value)
    sims = similarity_to_first(frames)
    readout.value = (f'<span id="drift-readout">drift {drift_slider.value:.2f} per frame: last frame vs first '
                     f"cosine = {sims[-1]:.3f} (lowest {sims.min():.3f})</span>")
    strip_view.value = png_bytes(image_strip(frames))


drift_slider.observe(update, names="value")
update()
display(widgets.VBox([drift_slider, readout, strip_view]))

# %% [markdown]
# ## 3. A real face
#
# Real photos use real tools. facenet-pytorch's **MTCNN** finds faces and returns a box, a confidence, and a
# 160x160 crop of the box, resized to the input size of facenet's recognizer (cropped and resized, not
# aligned: nothing rotates the face to level the eyes). Its weights ship inside the pip package, so this works
# offline. scikit-image ships a photo of the astronaut Eileen Collins that we can use anywhere.

# %%
from skimage import data

from labkit.faces import detect_faces

photo = data.astronaut()  # (512, 512, 3) uint8
found = detect_faces(photo)
print(f"{len(found.boxes)} face(s); box {found.boxes[0].round().tolist()}, confidence {float(found.probs[0]):.4f}")

# %%
from matplotlib.patches import Rectangle

from labkit.common import to_uint8

fig, (ax_photo, ax_crop) = plt.subplots(1, 2, figsize=(8, 4), gridspec_kw={"width_ratios": [2, 1]})
ax_photo.imshow(photo)
x0, y0, x1, y1 = found.boxes[0].tolist()
ax_photo.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=2))
ax_photo.set_title(f"MTCNN: p = {float(found.probs[0]):.3f}")
ax_crop.imshow(to_uint8(found.crops[0]))
ax_crop.set_title(f"crop, resized to {tuple(found.crops.shape[-2:])}")
for ax in (ax_photo, ax_crop):
    ax.axis("off")
fig.tight_layout()
fig.savefig(figure_path("00_astronaut_mtcnn.png"), dpi=80)

# %% [markdown]
# ## What you measured, and a question
#
# * A held identity stays near the top of the similarity scale while a drifting one falls away frame after frame;
#   the printed figures above give the last-frame cosine for both.
# * MTCNN found the astronaut's face with a confidence near 1 and cut the 160x160 crop that recognizers use.
#
# **Question to take to notebook 01:** the drifting row changed by a *small* random step per frame, yet its
# similarity kept falling. Why do small independent steps add up instead of averaging out, and what would a
# video model need in order to pull each frame back towards the reference instead of towards the previous frame?
