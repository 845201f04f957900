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
# # 07 · The identity-preservation loss
#
# Next to the usual denoising loss, identity-consistent video models add a loss that looks at the generated
# frames through a frozen face recognizer f:
#
# $$L = \underbrace{\operatorname{mean}_t \lVert f(v_t) - \operatorname{mean}_r f(\mathrm{ref}_r)\rVert^2}
# _{\text{reference term}}
# \;+\; \lambda\,\underbrace{\operatorname{mean}_t \lVert f(v_t) - f(v_{t+1})\rVert^2}_{\text{temporal term}}$$
#
# with $\lambda$ = `temporal_weight` = 0.5 by default. The reference term pulls every frame towards the
# references; the temporal term penalises identity changing from one frame to the next. f's embeddings are
# unit vectors, so $\lVert a - b\rVert^2 = 2 - 2\cos(a, b)$: each term is a cosine distance.
#
# In this notebook you will be able to:
# - write the loss vectorised, with ONE recognizer call for every frame of every video and the references;
# - check it with `labkit.exercises.check` and against the article's frame-by-frame loop;
# - see that gradients reach the generated frames while the frozen recognizer gets none;
# - measure both terms on a stable clip and on a clip whose identity drifts.

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
# ## A stable clip and a drifting clip
#
# `labkit.synthfaces` gives every identity a fixed set of traits (face shape, skin, hair, eyes, ...). A
# *stable* clip renders one identity's traits in every frame. For a *drifting* clip we keep exactly the same
# motion (pose, expression, lighting per frame) but slide the traits from identity A towards identity B over
# the frames: continuous traits are interpolated, discrete ones switch half way. That is identity drift
# made on purpose, with ground truth.

# %%
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

# %%
traits_a = synthfaces.identity_traits(torch.tensor([a] * num_frames))
traits_b = synthfaces.identity_traits(torch.tensor([b] * num_frames))
alpha = torch.linspace(0, 1, num_frames)


def blend(ta, tb):
    if ta.is_floating_point():
        w = alpha.reshape(-1, *[1] * (ta.dim() - 1))
        return (1 - w) * ta + w * tb
    return torch.where((alpha >= 0.5).reshape(-1, *[1] * (ta.dim() - 1)), tb, ta)


drift_traits = {k: blend(traits_a[k], traits_b[k]) for k in traits_a}

# %%
stable, stable_masks = synthfaces.render(traits_a, nuisances, size=64)
drifting, _ = synthfaces.render(drift_traits, nuisances, size=64)
references, reference_masks = synthfaces.render_faces(torch.tensor([a] * 3), size=64, generator=gen)  # 3 views of A
fig = show_images(torch.cat([stable, drifting]), ncols=num_frames, suptitle="top: stable (A)   bottom: A drifting to B")
fig = show_images(references, titles=["reference 1", "reference 2", "reference 3"])

# %% [markdown]
# ## Exercise: the loss, vectorised
#
# The article writes the loss with a Python loop over frames, calling the recognizer again for every frame
# (and re-encoding the references inside the loop). Write it without any loop:
#
# - inputs: `generated_video` `(B, F, 3, H, W)`, `reference_faces` `(B, R, 3, H, W)`, `face_encoder`
#   (maps `(N, 3, H, W) -> (N, 512)`), `temporal_weight`;
# - call `face_encoder` **once** on all B·F frames and B·R references together (`torch.cat`, then
#   `einops.rearrange` back to `(B, F, 512)` and `(B, R, 512)`)
# - reference term: squared distance of each frame's embedding to the **mean** reference embedding, averaged
#   over frames and videos;
# - temporal term: squared distance between **adjacent** frames, averaged over the F-1 steps and videos;
# - return `reference + temporal_weight * temporal` (a scalar).
#
# The cell below is a stub: **replace `raise NotImplementedError(...)` with your code** and run the check. It
# prints PASS or FAIL for each case; until every case passes, the rest of the notebook uses labkit's own
# implementation, so the notebook runs either way. After a failed check, `hint("identity_loss")`
# explains what the failing cases mean (ask again for a more specific hint), and `solution("identity_loss")` shows a
# worked solution.

# %%
from einops import rearrange

from labkit.exercises import check, hint, solution


def my_identity_loss(generated_video, reference_faces, face_encoder, temporal_weight=0.5):
    # TODO (exercise): one encoder call, mean reference, adjacent frames; keep the gradient
    raise NotImplementedError("exercise identity_loss: write this function, then run the cell")


# yours once every case passes, labkit's own until then: the notebook runs either way
my_identity_loss = check("identity_loss", my_identity_loss).function

# %% [markdown]
# ## Against the article's loop, and the gradient
#
# `labkit.losses.identity_preservation_loss` is the same loss, with batches, single videos, and optional face
# crops (`face_masks`: each frame is cropped to its face box with `torchvision.ops.roi_align`, still one
# recognizer call). Below, the article's loop (with squared distances summed over the 512 dimensions, as in
# the formula) gives the same number, with many more recognizer calls.

# %%
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

# %%
video = drifting.clone().to(device).requires_grad_(True)   # stands in for the generator's output
loss = identity_preservation_loss(video, references.to(device), backbone)
loss.backward()
print(f"gradient on the frames: norm {video.grad.norm():.3e}")
print("recognizer parameters with a gradient:", sum(p.grad is not None for p in backbone.parameters()))

# %% [markdown]
# ## Face crops: both or neither
#
# With `face_masks`, each frame is cropped to its face box before f sees it; `reference_masks` does the same for
# the references. Crop both or neither: cropping only the frames compares a close-up with a full portrait,
# and even a perfect frame then looks far from its references. On the stable clip of A:

# %%
with torch.no_grad():
    for label, frame_masks, ref_masks in [("no crops", None, None), ("frames cropped only", stable_masks, None),
                                         ("both cropped", stable_masks, reference_masks)]:
        _, t = identity_preservation_loss(
            stable[None].to(device), references[None].to(device), backbone, return_terms=True,
            face_masks=None if frame_masks is None else frame_masks[None].to(device),
            reference_masks=None if ref_masks is None else ref_masks[None].to(device))
        print(f"{label:>20}: reference term {t['reference'].item():.3f}")

# %% [markdown]
# ## Measured: the two terms on a stable and a drifting clip
#
# We compute both terms per frame (`return_terms=True`) for the two clips, with the same references of A.
# The synthetic frames are already face-centred portraits, framed like the recognizer's training images, so
# we use no crops here.

# %%
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

# %% [markdown]
# The stable clip's reference term stays low and flat: it is not zero, because the three references differ in
# pose, lighting and background (their mean embedding is shorter than 1) and each frame differs from them
# again. The drifting clip starts at the same value in frame 0, where both clips show A, then climbs as the
# traits move to B and ends several times higher. The temporal term separates the clips at every step: the
# stable clip barely moves from frame to frame, the drifting clip moves most in the middle, where the blend is
# half way and the discrete traits switch.
#
# **Question:** the temporal term only compares neighbours. A clip that drifts very slowly (a tiny change per
# frame) could keep it near zero while the identity ends up somewhere else entirely. Which term catches that
# drift, and what would happen to training if you used only the temporal term?
