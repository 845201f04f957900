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
# # 06 · Reference conditioning: giving the model a face to keep
#
# Instead of describing a character in words, you give the model a few **reference pictures**. The
# `ReferenceConditionedGenerator` encodes them with the face recognizer, **averages** them into one identity,
# turns it into identity tokens (notebook 04) and injects them in every block through identity attention
# (notebook 05), scaled by `identity_strength`.
#
# By the end of this notebook you will be able to:
# - draw a person the model never saw **from their references alone**, starting from pure noise;
# - generate a video with the four strategies of the course and compare them with effect sizes;
# - explain what averaging several references does, and write it;
# - choose `identity_strength` by measuring the trade-off between identity and variety.

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

# %%
import torch

from labkit import metrics
from labkit.common import figure_path, show_images, show_video
from labkit.faces import load_recognizer
from labkit.pipeline import STRATEGIES, ReferenceConditionedGenerator
from labkit.synthfaces import make_clips, test_ids

pipe = ReferenceConditionedGenerator.from_shipped(device=device)
recognizer, size = pipe.recognizer, pipe.model.config.sample_size  # the encoder that makes identity tokens
scorer = load_recognizer()  # the recognizer that judges them (identity_scores' default)
print("strategies:", STRATEGIES)

# %% [markdown]
# Five references of each of eight faces the model never saw in training, each in its own pose, light,
# background and clothes. A second, separate set of three references per person is kept aside for scoring:
# the generator never sees it, so copying a reference pixel by pixel earns nothing.

# %%
ids = test_ids(8)
clips = make_clips(ids, num_frames=24, size=size, num_refs=5, num_cuts=2, generator=torch.Generator().manual_seed(0))
scoring = make_clips(ids, num_frames=1, size=size, num_refs=3, generator=torch.Generator().manual_seed(1)).references
fig = show_images(clips.references[0], titles=[f"ref {i}" for i in range(5)], suptitle=f"identity {int(ids[0])}")


# %% [markdown]
# Every score in this notebook is `metrics.identity_scores`: about 1 for a real frame of the person, about 0
# for a stranger or for anything that is not a face (notebook 03). `per_video` gives one number per person,
# so that two settings can be compared on the same people: the mean of the per-person differences, with its
# standard error over people (`metrics.mean_and_se`). Every comparison is read against **the smallest
# difference that matters**, `metrics.MEANINGFUL_DIFFERENCE` = 0.05 of the identity score, by
# `metrics.describe_effect`: *higher* or *lower* only when the whole interval (the effect plus or minus two
# standard errors) lies beyond it, *no difference that matters* when the whole interval lies within it, and
# *unclear* otherwise (more people would tell).

# %%
def per_video(frames, refs=scoring):
    """Mean identity score of each video: (B,)."""
    return metrics.identity_scores(frames.cpu(), refs[: len(frames)], scorer).mean(1)


def effect(a, b):
    """Mean of the per-person differences a - b, and its standard error."""
    return metrics.mean_and_se(a - b)


print("smallest difference that matters:", metrics.MEANINGFUL_DIFFERENCE)


# %% [markdown]
# ## Exercise: averaging references
#
# The article averages the encoded references "for a robust identity". With unit-norm face embeddings, the
# mean of several is shorter than 1, so it is normalised again. Write `my_mean_reference_embedding` for
# embeddings of shape `(R, D)` (one identity) or `(B, R, D)` (a batch), returning `(D,)` or `(B, D)` unit vectors.
#
# The cell below is a stub: **replace `raise NotImplementedError(...)` with your code** and run the check. It
# prints PASS or FAIL for each case; until every case passes, the rest of the notebook uses labkit's own
# implementation, so the notebook runs either way. After a failed check, `hint("mean_reference_embedding")`
# explains what the failing cases mean (ask again for a more specific hint), and
# `solution("mean_reference_embedding")` shows a worked solution.

# %%
def my_mean_reference_embedding(embeddings):
    # TODO (exercise): average over the references, then re-normalise to unit length
    raise NotImplementedError("exercise mean_reference_embedding: write this function, then run the cell")


# %%
from labkit.exercises import check, hint, solution

# yours once every case passes, labkit's own until then: the notebook runs either way
my_mean_reference_embedding = check("mean_reference_embedding", my_mean_reference_embedding).function

# %% [markdown]
# ## A person from the references alone
#
# `generate(..., keyframe=False)` gives the model no first frame: every pixel starts as pure noise, and the
# only thing that says who to draw is the identity tokens. This is what IP-Adapter, ID-Animator and ConsisID
# do. Only the strategies with identity tokens (`explicit`, `face_aware`) can; the others need a first frame
# and say so.
#
# `identity_guidance` is classifier-free guidance on identity: the model predicts with and without the
# tokens, and the sampler moves `guidance` times the difference away from the prediction without them.

# %%
steps = 10 if QUICK else 20
alone = {}
for guidance in (1.0, 2.0):
    out = pipe.generate(reference_images=clips.references[:, :3], num_frames=1, keyframe=False, strategy="explicit",
                        identity_strength=1.0, identity_guidance=guidance, num_inference_steps=steps,
                        generator=torch.Generator().manual_seed(0), check_faces=False, progress=False)
    alone[guidance] = out.frames.cpu()
    mean, se = metrics.mean_and_se(per_video(alone[guidance]))
    top1 = metrics.identification_top1(alone[guidance], scoring, scorer)
    print(f"guidance {guidance}: identity score {mean:.3f} +- {se:.3f}, top-1 among {len(ids)} people {top1:.2f}")
print(metrics.describe_effect("guidance 2 - guidance 1", *effect(per_video(alone[2.0]), per_video(alone[1.0]))))
try:
    pipe.generate(reference_images=clips.references[:1, :3], num_frames=1, keyframe=False, strategy="implicit")
except ValueError as err:
    print("implicit, keyframe=False:", err)

# %%
fig = show_images(torch.cat([clips.references[:, 0], alone[1.0][:, 0], alone[2.0][:, 0]]), ncols=len(ids),
                  suptitle="rows: a reference / from pure noise, guidance 1 / guidance 2 (each column one person)")
fig.savefig(figure_path("06_references_only.png"), dpi=100)

# %% [markdown]
# Look at the columns before reading the numbers: does each drawn face have its reference's hair, skin and
# face shape? **Top-1 identification** asks the recognizer which of the eight reference sets each drawn face
# is closest to; chance is 1 in 8.
#
# ## A video from references, with a keyframe
#
# With `keyframe=True` (the default) the first reference is also the video's first frame. Frames beyond one
# model call are made in chunks with a cut between chunks. The `face_masks` tell the face-aware strategy
# where the face is in each frame (here: the layout of a real clip).

# %%
num_frames = 19  # 3 chunks: 7 new frames, then 6 per chunk
out = pipe.generate("a cartoon face", clips.references[:, :3], num_frames=num_frames, identity_strength=1.0,
                    strategy="face_aware", face_masks=clips.masks[:, :num_frames], num_inference_steps=steps,
                    generator=torch.Generator().manual_seed(0), check_faces=False)
show_video(out.frames[0], fps=4, title="face_aware, strength 1.0")

# %% [markdown]
# ## The four strategies, measured
#
# The same references and seed for all four. Each line gives the mean identity score with its standard
# error over the eight people; the effects below are paired differences against the implicit strategy, read
# against the smallest difference that matters.

# %%
videos, scores = {}, {}
for strategy in STRATEGIES:
    o = pipe.generate(reference_images=clips.references[:, :3], num_frames=num_frames, strategy=strategy,
                      identity_strength=1.0, face_masks=clips.masks[:, :num_frames], num_inference_steps=steps,
                      generator=torch.Generator().manual_seed(0), check_faces=False, progress=False)
    videos[strategy], scores[strategy] = o.frames.cpu(), per_video(o.frames)
    mean, se = metrics.mean_and_se(scores[strategy])
    moving = metrics.variety(videos[strategy], o.cuts).mean()
    print(f"{strategy:10s} identity {mean:.3f} +- {se:.3f}   variety {moving:.3f}")
print(f"real clips  variety {metrics.variety(clips.frames, clips.cuts).mean():.3f}")
for strategy in ("keyframe", "explicit", "face_aware"):
    print(metrics.describe_effect(f"{strategy} - implicit", *effect(scores[strategy], scores["implicit"])))
print(metrics.describe_effect("face_aware - explicit", *effect(scores["face_aware"], scores["explicit"])))

# %%
fig = show_images(torch.cat([videos[s][0, ::3] for s in STRATEGIES]), ncols=len(videos["explicit"][0, ::3]),
                  suptitle="rows: " + ", ".join(STRATEGIES))
fig.savefig(figure_path("06_strategies.png"), dpi=100)

# %% [markdown]
# ## Do the identity tokens carry the identity?
#
# Explicit identity can only work if the tokens differ from face to face and the model reads them. Two
# measures (the training monitor logs both): how much the tokens of different faces differ, relative to their
# size, and how much the model's prediction changes when a frame gets *another* face's tokens instead of its
# own.

# %%
model = pipe.model
emb = metrics.embed_frames(recognizer, clips.references[:, :3]).to(device)
with torch.no_grad():
    tokens = model.encode_identity(emb)                      # (B, T, D)
    spread = torch.cdist(tokens.flatten(1), tokens.flatten(1)).sum() / (len(ids) * (len(ids) - 1))
    spread = spread / tokens.flatten(1).norm(dim=1).mean()
    x = torch.randn(len(ids), 1, 3, size, size, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(500)

    def predict(tok, strength=1.0):
        kwargs = {"identity_tokens": tok, "identity_strength": strength}
        return model(x.to(device), t, cross_attention_kwargs=kwargs).sample

    own, other, off = predict(tokens), predict(tokens.roll(1, 0)), predict(tokens, 0.0)
print(f"tokens of two different faces differ by {100 * spread:.0f}% of their size")
print(f"prediction change: tokens on vs off {(own - off).norm() / own.norm():.3f}, own vs another face's tokens "
      f"{(own - other).norm() / own.norm():.3f} (relative)")

# %% [markdown]
# ## The identity_strength slider
#
# Move the slider to draw the first person again from the references alone at that strength. At 0 the
# tokens are switched off and the model draws *somebody*; as you raise it, watch the face become the person in
# the references. (When the notebook runs unattended, the cell only shows the first result.)

# %%
import io

import ipywidgets as widgets
from IPython.display import display
from PIL import Image

from labkit.common import image_strip

view = widgets.Image(format="png")
label = widgets.HTML()

def render(strength):
    o = pipe.generate(reference_images=clips.references[:1, :3], num_frames=4, identity_strength=strength,
                      keyframe=False, strategy="explicit", num_inference_steps=steps,
                      generator=torch.Generator().manual_seed(0), check_faces=False, progress=False)
    buf = io.BytesIO()
    strip = image_strip(torch.cat([clips.references[0, :3], o.frames[0].cpu()]))
    Image.fromarray(strip).resize((strip.shape[1] * 4, strip.shape[0] * 4), Image.NEAREST).save(buf, "png")
    view.value = buf.getvalue()
    label.value = (f"strength {strength:.2f}: identity score <b>{per_video(o.frames)[0]:.3f}</b> "
                   "(3 references, then 4 frames)")

# The slider has no readout of its own: typed into it, a 5 would become 1.5 without a word. The box beside it
# takes any number and says so when one is out of range.
slider = widgets.FloatSlider(value=1.0, min=0.0, max=1.5, step=0.1, description="identity_strength",
                             readout=False, continuous_update=False, style={"description_width": "initial"})
box = widgets.FloatText(value=1.0, step=0.1, layout=widgets.Layout(width="70px"))


def on_slider(change):
    box.value = change["new"]
    render(change["new"])


def on_box(change):
    if not slider.min <= change["new"] <= slider.max:
        label.value = (f"<span style='color:#b00020'>identity_strength must be {slider.min:g}..{slider.max:g}, "
                       f"got {change['new']:g}: not drawn; the slider stays at {slider.value:g}</span>")
    elif change["new"] != slider.value:
        slider.value = change["new"]  # on_slider draws it
    elif "b00020" in label.value:  # back in range at the slider's value: draw it again, which clears the message
        render(slider.value)


slider.observe(on_slider, names="value")
box.observe(on_box, names="value")
render(slider.value)
display(widgets.VBox([widgets.HBox([slider, box]), label, view]))

# %% [markdown]
# ## The trade-off, measured
#
# Too little strength and the face is somebody else; too much and, the article says, the model becomes
# rigid: less change of pose and expression. We draw 3 chunks from the references alone at each strength and
# measure both: the identity score, and *variety* (mean change between consecutive frames within a shot) as a
# fraction of the variety of real clips. The y axis is fixed, so a small difference looks small.

# %%
strengths = [0.0, 0.5, 1.0, 1.5] if QUICK else [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
real_variety = metrics.variety(clips.frames, clips.cuts).mean().item()
sweep = {"identity": [], "se": [], "variety": [], "per_video": []}
for s in strengths:
    o = pipe.generate(reference_images=clips.references[:, :3], num_frames=num_frames, identity_strength=s,
                      keyframe=False, strategy="explicit", num_inference_steps=steps,
                      generator=torch.Generator().manual_seed(0), check_faces=False, progress=False)
    pv = per_video(o.frames)
    mean, se = metrics.mean_and_se(pv)
    sweep["identity"].append(mean), sweep["se"].append(se), sweep["per_video"].append(pv)
    sweep["variety"].append(metrics.variety(o.frames.cpu(), o.cuts).mean().item() / real_variety)
    print(f"strength {s:.2f}: identity {mean:.3f} +- {se:.3f}, variety {sweep['variety'][-1]:.2f} x real")

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(5.5, 3))
ax.errorbar(strengths, sweep["identity"], yerr=sweep["se"], marker="o", capsize=3, label="identity score")
ax.axvspan(0.7, 0.85, color="orange", alpha=0.2, label="article's sweet spot")
ax.set(xlabel="identity_strength", ylabel="identity score", ylim=(-0.1, 1.1))  # fixed axes: small looks small
ax2 = ax.twinx()
ax2.plot(strengths, sweep["variety"], marker="s", color="tab:green", label="variety / real variety")
ax2.set(ylabel="variety / real variety", ylim=(0, 8))
handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
ax.legend(handles=handles, fontsize=8, loc="lower right")
ax.set_title("Identity vs variety (references only)")
fig.tight_layout()
fig.savefig(figure_path("06_strength.png"), dpi=100)

# %% [markdown]
# Where does more strength stop helping? Below, the smallest strength that is not lower than the best one by
# a difference that matters (more strength than that buys nothing that matters), and the effect of strength
# 1.0 against 0.

# %%
best = max(range(len(strengths)), key=lambda i: sweep["identity"][i])
for i, s in enumerate(strengths):
    if i != best:
        print(metrics.describe_effect(f"strength {strengths[best]} - strength {s}",
                                      *effect(sweep["per_video"][best], sweep["per_video"][i])))
enough = next((i for i in range(len(strengths)) if i == best or metrics.effect_verdict(
    *effect(sweep["per_video"][best], sweep["per_video"][i])).startswith("no difference")), best)
print(f"best strength {strengths[best]} ({sweep['identity'][best]:.3f}); strength {strengths[enough]} is the "
      "smallest not lower than it by a difference that matters")
i1, i0 = strengths.index(1.0), strengths.index(0.0)
print(metrics.describe_effect("strength 1.0 - strength 0", *effect(sweep["per_video"][i1], sweep["per_video"][i0])),
      f"| variety {sweep['variety'][i1] - sweep['variety'][i0]:+.2f} x real")

# %% [markdown]
# ## More references
#
# 1, 3 and 5 references of the same face, averaged, from the references alone.

# %%
by_refs = {}
for r in (1, 3, 5):
    o = pipe.generate(reference_images=clips.references[:, :r], num_frames=7, strategy="explicit", keyframe=False,
                      identity_strength=1.0, num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                      check_faces=False, progress=False)
    by_refs[r] = per_video(o.frames)
    mean, se = metrics.mean_and_se(by_refs[r])
    print(f"{r} reference(s): identity {mean:.3f} +- {se:.3f}")
print(metrics.describe_effect("3 references - 1 reference", *effect(by_refs[3], by_refs[1])))
print(metrics.describe_effect("5 references - 3 references", *effect(by_refs[5], by_refs[3])))

# %% [markdown]
# ## What we measured
#
# The printed lines above are this notebook's result, with their standard errors: how well the model draws
# a person it never saw from references alone (score and top-1), how the four strategies compare over three
# chunks, how far the tokens of different faces differ and how much the model reacts to them, where more
# `identity_strength` stops helping and what it costs in variety, and what more references add. The verdicts
# are printed by the cells, from the effect sizes; read them, not the headings.
#
# **Question.** If the identity score keeps rising with strength while variety falls, where would *you* set
# the slider for a 10-second shot of a talking character, and what would you measure to decide?
