"""Write notebooks 01_drift, 06_reference_conditioning and 08_training (no outputs) with nbformat.

    .venv/bin/python notebooks/src/make_01_06_08_notebooks.py
"""

from nbwriter import DEVICE, SETUP, code, md, write_notebook

# --------------------------------------------------------------------------------------------- 01_drift
DRIFT = [
    md("""
# 01 · Drift: why a diffusion model forgets a face

A video diffusion model makes every frame by starting from noise and removing it step by step. Each
step of a *stochastic* sampler draws fresh noise, so two runs from the same conditions end in different
places, and small differences add up over frames, chunks and cuts. The article this course follows calls it
**identity drift**.

By the end of this notebook you will be able to:
- write the denoising step the article shows, with a real diffusers scheduler;
- sample the same conditions twice and **measure** how far the two results drift apart;
- read the course's identity score: 1 for a real frame of the person, 0 for a stranger or for no face.
"""),
    code(SETUP),
    code(DEVICE),
    md("""
## The model and the recognizer

`ReferenceConditionedGenerator.from_shipped()` loads the small video model shipped in `data/` (an
`IdentityVideoDiT`, trained in this repository on a 2-core CPU, so its faces are small and rough) and the
frozen face recognizer `f` that turns a face into a 512-number embedding. Here we use `f` only to *measure*.
"""),
    code('''import torch

from labkit import metrics
from labkit.common import figure_path
from labkit.pipeline import ReferenceConditionedGenerator, denoise_step, make_scheduler
from labkit.synthfaces import make_clips, test_ids

pipe = ReferenceConditionedGenerator.from_shipped(device=device)
model, recognizer = pipe.model, pipe.recognizer
size, chunk = model.config.sample_size, model.config.max_frames
num_params = sum(p.numel() for p in model.parameters())
print(f"{num_params / 1e6:.2f} M parameters, {chunk} frames of {size}x{size} per call")'''),
    md("""
Faces we never trained on (held-out ids ≥ 1,000,000). For each: three reference pictures, and a real
clip whose first frame will be the **keyframe** the model starts from.
"""),
    code('''ids = test_ids(3 if QUICK else 6)
real = make_clips(ids, num_frames=chunk, size=size, num_refs=3, generator=torch.Generator().manual_seed(0))
levels = recognizer.score_levels[str(size)]  # measured on real frames when the recognizer was trained
print(f"cosine of real frames to their references (ceiling) {levels['ceiling']:.3f}, "
      f"of strangers (floor) {levels['floor']:.3f}")'''),
    md("""
**Ceiling and floor.** A cosine similarity of, say, 0.6 means nothing on its own. The ceiling is what *real*
frames of the same person score against the references; the floor is what strangers score.
`metrics.identity_scores(frames, references)` maps the ceiling to 1 and the floor to 0, and multiplies by
the recognizer's probability that the frame is a face at all, so mush and noise score 0 too (notebook 03).

## Exercise: the denoising step

Write the article's `denoise_step`: ask the model for its prediction at timestep `t`, then let the
scheduler step from `x_t` to `x_{t-1}`. diffusers models return an object with `.sample`, other models the
prediction itself: handle both. Schedulers return an object with `.prev_sample`. Pass `generator` to
`scheduler.step` so that the noise it draws is reproducible.

The cell below is a stub: **replace `raise NotImplementedError(...)` with your code** and run the check. It
prints PASS or FAIL for each case; until every case passes, the rest of the notebook uses labkit's own
implementation, so the notebook runs either way. After a failed check, `hint("denoise_step")`
explains what the failing cases mean (ask again for a more specific hint), and `solution("denoise_step")` shows a
worked solution.
"""),
    code('''def my_denoise_step(x_t, model, t, scheduler, generator=None, model_kwargs=None):
    # TODO (exercise): ask the model for its prediction at t (in either form), let the scheduler step; return x_{t-1}
    raise NotImplementedError("exercise denoise_step: write this function, then run the cell")'''),
    code('''from labkit.exercises import check, hint, solution

# yours once every case passes, labkit's own until then: the notebook runs either way
my_denoise_step = check("denoise_step", my_denoise_step).function'''),
    md("""
## Sampling the same conditions twice

Both runs get the same keyframe and the same starting noise. Only the noise that the **DDPM** sampler draws
*during* sampling differs (two generators). With **DDIM** (eta = 0) no noise is drawn after the start, so
the two runs are identical: the drift below is the sampler's doing.

Every new frame starts from pure noise (`init_strength = 1.0`). Try `init_strength = 0.7`: the frames then
start SDEdit-style from the keyframe noised to `t = 700` (of 1000) and only the remaining steps run, which
keeps them closer to the keyframe.
"""),
    code('''init_strength = 1.0


def sample_chunk(scheduler, start, step_seed, steps):
    """One chunk from the keyframe (frame 0 given), no identity tokens: (B, F-1, 3, S, S)."""
    b = start.shape[0]
    keyframe = real.frames[:, :1].to(device)
    context = torch.zeros_like(start)
    context[:, :1] = keyframe
    given = torch.zeros(b, chunk, dtype=torch.bool, device=device)
    given[:, 0] = True
    kwargs = dict(context_frames=context, context_mask=given, cuts=torch.zeros_like(given))
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps[scheduler.timesteps <= init_strength * 1000]
    x = scheduler.add_noise(keyframe.expand_as(start), start, timesteps[:1].repeat(b))  # SDEdit start
    g = torch.Generator().manual_seed(step_seed)
    with torch.no_grad():
        for t in timesteps:
            x = my_denoise_step(x, model, t, scheduler, generator=g, model_kwargs=kwargs)
    return x.clamp(-1, 1)[:, 1:].cpu()  # frame 0 was given

steps = 20 if QUICK else 50
start = torch.randn(len(ids), chunk, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
ddpm_a = sample_chunk(make_scheduler("ddpm"), start, step_seed=1, steps=steps)
ddpm_b = sample_chunk(make_scheduler("ddpm"), start, step_seed=2, steps=steps)
ddim_a = sample_chunk(make_scheduler("ddim"), start, step_seed=1, steps=steps)
ddim_b = sample_chunk(make_scheduler("ddim"), start, step_seed=2, steps=steps)
print(f"mean |A - B| per pixel: DDPM runs {(ddpm_a - ddpm_b).abs().mean():.3f}, "
      f"DDIM runs {(ddim_a - ddim_b).abs().mean():.3f}")'''),
    code('''from labkit.common import show_images

fig = show_images(torch.cat([real.frames[0, 1:], ddpm_a[0], ddpm_b[0]]), ncols=chunk - 1,
                  suptitle="real clip / DDPM run A / DDPM run B (same keyframe, same start noise)")
fig.savefig(figure_path("01_drift_runs.png"), dpi=100)'''),
    md("""
## Measuring the drift

For each run: the identity score of every frame against the references, and the cosine between the two
runs' frames. A stochastic sampler makes the two runs disagree, and each frame wanders from the reference.
"""),
    code('''def identity(frames):
    """identity_scores of frames (B, F, 3, S, S) against each person's references: (B, F)."""
    return metrics.identity_scores(frames.cpu(), real.references, recognizer)

emb_a, emb_b = metrics.embed_frames(recognizer, ddpm_a), metrics.embed_frames(recognizer, ddpm_b)
between = torch.nn.functional.cosine_similarity(emb_a, emb_b, dim=-1)
per_person = {name: identity(frames).mean(1) for name, frames in
              [("real", real.frames[:, 1:]), ("DDPM A", ddpm_a), ("DDPM B", ddpm_b), ("DDIM", ddim_a)]}
for name, scores in per_person.items():
    mean, se = metrics.mean_and_se(scores)
    print(f"{name:7s} identity score {mean:.3f} +- {se:.3f} (mean over {len(scores)} people, standard error)")
print(f"cosine between the two DDPM runs, frame by frame: {between.mean():.3f} (1.0 = the same face)")
print(metrics.describe_effect("DDPM B - DDPM A (the same conditions twice)",
                              *metrics.mean_and_se(per_person["DDPM B"] - per_person["DDPM A"])))'''),
    md("""
## Drift over a long video

A long video is made in chunks; each chunk continues from the last two frames of the previous one, with a
cut between chunks. With only that temporal context (the **implicit** strategy), nothing pulls the face back
to the reference, so errors compound. With **explicit** identity tokens the references are given to every
chunk.
"""),
    code('''num_chunks = 4 if QUICK else 8
num_frames = (chunk - 1) + (num_chunks - 1) * (chunk - 2)
per_chunk, per_person = {}, {}
for strategy in ("implicit", "explicit"):
    out = pipe.generate(reference_images=real.references, num_frames=num_frames, strategy=strategy,
                        generator=torch.Generator().manual_seed(0), num_inference_steps=10 if QUICK else 20,
                        check_faces=False, progress=False)
    norm = identity(out.frames.cpu())
    bounds = out.chunk_starts + [num_frames]
    per_person[strategy] = torch.stack([norm[:, a:b].mean(1) for a, b in zip(bounds[:-1], bounds[1:])], 1)
    per_chunk[strategy] = per_person[strategy].mean(0).tolist()  # (chunks,) mean over people
    print(strategy, [round(v, 2) for v in per_chunk[strategy]])'''),
    code('''import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(5, 3))
for name, values in per_chunk.items():
    ax.plot(range(1, len(values) + 1), values, marker="o", label=name)
ax.axhline(0, color="grey", lw=0.8, ls="--")
ax.set_xlabel("chunk (a cut before each)")
ax.set_ylabel("identity score")
ax.set_ylim(-0.1, 1.05)
ax.legend()
ax.set_title("Identity over a long video")
fig.tight_layout()
fig.savefig(figure_path("01_drift_chunks.png"), dpi=100)'''),
    md("""
Two claims of the course, checked on these numbers (not asserted): the implicit strategy's identity falls
over the chunks, and identity tokens keep it higher. Each is an effect over the same people (the mean of
the per-person differences, with its standard error), read against the smallest difference in identity
score that matters, `metrics.MEANINGFUL_DIFFERENCE`: a verdict says *higher* or *lower* only when the whole
interval (two standard errors either side) lies beyond it. With this handful of people, *unclear* is a
likely and honest answer.
"""),
    code('''imp, exp = per_person["implicit"], per_person["explicit"]  # (people, chunks)
fall = metrics.mean_and_se(imp[:, -1] - imp[:, 0])
print(metrics.describe_effect(f"implicit, chunk {imp.shape[1]} - chunk 1", *fall))
print("  -> the implicit strategy's identity", "falls" if metrics.effect_verdict(*fall).startswith("lower")
      else "does NOT fall by a difference that matters here")
gap = metrics.mean_and_se(exp.mean(1) - imp.mean(1))
print(metrics.describe_effect("explicit - implicit, mean over chunks", *gap))
print("  -> identity tokens", "keep it higher" if metrics.effect_verdict(*gap).startswith("higher")
      else "do NOT keep it higher by a difference that matters here")'''),
    md("""
## What we measured

The numbers above are this notebook's result: how far two DDPM runs of the same conditions end apart (DDIM
runs do not differ at all), and how the identity score evolves chunk by chunk with and without identity
tokens, printed with a verdict. With only temporal context, every chunk continues from generated frames:
small errors are copied forward and nothing pulls the face back to the references. Identity tokens give
every chunk the references again. This notebook uses a handful of people; `python -m labkit.bench drift`
measures all four strategies on more of them, with standard errors.

**Question.** DDIM with eta = 0 gave the *same* video twice. Does that mean deterministic sampling solves
drift? (Hint: what happens to the implicit strategy's score over chunks, where no new noise is drawn after
each chunk's start?)
"""),
]

# ----------------------------------------------------------------------------- 06_reference_conditioning
REFCOND = [
    md("""
# 06 · Reference conditioning: giving the model a face to keep

Instead of describing a character in words, you give the model a few **reference pictures**. The
`ReferenceConditionedGenerator` encodes them with the face recognizer, **averages** them into one identity,
turns it into identity tokens (notebook 04) and injects them in every block through identity attention
(notebook 05), scaled by `identity_strength`.

By the end of this notebook you will be able to:
- draw a person the model never saw **from their references alone**, starting from pure noise;
- generate a video with the four strategies of the course and compare them with effect sizes;
- explain what averaging several references does, and write it;
- choose `identity_strength` by measuring the trade-off between identity and variety.
"""),
    code(SETUP),
    code(DEVICE),
    code('''import torch

from labkit import metrics
from labkit.common import figure_path, show_images, show_video
from labkit.pipeline import STRATEGIES, ReferenceConditionedGenerator
from labkit.synthfaces import make_clips, test_ids

pipe = ReferenceConditionedGenerator.from_shipped(device=device)
recognizer, size = pipe.recognizer, pipe.model.config.sample_size
print("strategies:", STRATEGIES)'''),
    md("""
Five references of each of eight faces the model never saw in training, each in its own pose, light,
background and clothes. A second, separate set of three references per person is kept aside for scoring:
the generator never sees it, so copying a reference pixel by pixel earns nothing.
"""),
    code('''ids = test_ids(8)
clips = make_clips(ids, num_frames=24, size=size, num_refs=5, num_cuts=2, generator=torch.Generator().manual_seed(0))
scoring = make_clips(ids, num_frames=1, size=size, num_refs=3, generator=torch.Generator().manual_seed(1)).references
fig = show_images(clips.references[0], titles=[f"ref {i}" for i in range(5)], suptitle=f"identity {int(ids[0])}")'''),
    md("""
Every score in this notebook is `metrics.identity_scores`: about 1 for a real frame of the person, about 0
for a stranger or for anything that is not a face (notebook 03). `per_video` gives one number per person,
so that two settings can be compared on the same people: the mean of the per-person differences, with its
standard error over people (`metrics.mean_and_se`). Every comparison is read against **the smallest
difference that matters**, `metrics.MEANINGFUL_DIFFERENCE` = 0.05 of the identity score, by
`metrics.describe_effect`: *higher* or *lower* only when the whole interval (the effect plus or minus two
standard errors) lies beyond it, *no difference that matters* when the whole interval lies within it, and
*unclear* otherwise (more people would tell).
"""),
    code('''def per_video(frames, refs=scoring):
    """Mean identity score of each video: (B,)."""
    return metrics.identity_scores(frames.cpu(), refs[: len(frames)], recognizer).mean(1)


def effect(a, b):
    """Mean of the per-person differences a - b, and its standard error."""
    return metrics.mean_and_se(a - b)


print("smallest difference that matters:", metrics.MEANINGFUL_DIFFERENCE)'''),
    md("""
## Exercise: averaging references

The article averages the encoded references "for a robust identity". With unit-norm face embeddings, the
mean of several is shorter than 1, so it is normalised again. Write `my_mean_reference_embedding` for
embeddings of shape `(R, D)` (one identity) or `(B, R, D)` (a batch), returning `(D,)` or `(B, D)` unit vectors.

The cell below is a stub: **replace `raise NotImplementedError(...)` with your code** and run the check. It
prints PASS or FAIL for each case; until every case passes, the rest of the notebook uses labkit's own
implementation, so the notebook runs either way. After a failed check, `hint("mean_reference_embedding")`
explains what the failing cases mean (ask again for a more specific hint), and
`solution("mean_reference_embedding")` shows a worked solution.
"""),
    code('''def my_mean_reference_embedding(embeddings):
    # TODO (exercise): average over the references, then re-normalise to unit length
    raise NotImplementedError("exercise mean_reference_embedding: write this function, then run the cell")'''),
    code('''from labkit.exercises import check, hint, solution

# yours once every case passes, labkit's own until then: the notebook runs either way
my_mean_reference_embedding = check("mean_reference_embedding", my_mean_reference_embedding).function'''),
    md("""
## A person from the references alone

`generate(..., keyframe=False)` gives the model no first frame: every pixel starts as pure noise, and the
only thing that says who to draw is the identity tokens. This is what IP-Adapter, ID-Animator and ConsisID
do. Only the strategies with identity tokens (`explicit`, `face_aware`) can; the others need a first frame
and say so.

`identity_guidance` is classifier-free guidance on identity: the model predicts with and without the
tokens, and the sampler moves `guidance` times the difference away from the prediction without them.
"""),
    code('''steps = 10 if QUICK else 20
alone = {}
for guidance in (1.0, 2.0):
    out = pipe.generate(reference_images=clips.references[:, :3], num_frames=1, keyframe=False, strategy="explicit",
                        identity_strength=1.0, identity_guidance=guidance, num_inference_steps=steps,
                        generator=torch.Generator().manual_seed(0), check_faces=False, progress=False)
    alone[guidance] = out.frames.cpu()
    mean, se = metrics.mean_and_se(per_video(alone[guidance]))
    top1 = metrics.identification_top1(alone[guidance], scoring, recognizer)
    print(f"guidance {guidance}: identity score {mean:.3f} +- {se:.3f}, top-1 among {len(ids)} people {top1:.2f}")
print(metrics.describe_effect("guidance 2 - guidance 1", *effect(per_video(alone[2.0]), per_video(alone[1.0]))))
try:
    pipe.generate(reference_images=clips.references[:1, :3], num_frames=1, keyframe=False, strategy="implicit")
except ValueError as err:
    print("implicit, keyframe=False:", err)'''),
    code('''fig = show_images(torch.cat([clips.references[:, 0], alone[1.0][:, 0], alone[2.0][:, 0]]), ncols=len(ids),
                  suptitle="rows: a reference / from pure noise, guidance 1 / guidance 2 (each column one person)")
fig.savefig(figure_path("06_references_only.png"), dpi=100)'''),
    md("""
Look at the columns before reading the numbers: does each drawn face have its reference's hair, skin and
face shape? **Top-1 identification** asks the recognizer which of the eight reference sets each drawn face
is closest to; chance is 1 in 8.

## A video from references, with a keyframe

With `keyframe=True` (the default) the first reference is also the video's first frame. Frames beyond one
model call are made in chunks with a cut between chunks. The `face_masks` tell the face-aware strategy
where the face is in each frame (here: the layout of a real clip).
"""),
    code('''num_frames = 19  # 3 chunks: 7 new frames, then 6 per chunk
out = pipe.generate("a cartoon face", clips.references[:, :3], num_frames=num_frames, identity_strength=1.0,
                    strategy="face_aware", face_masks=clips.masks[:, :num_frames], num_inference_steps=steps,
                    generator=torch.Generator().manual_seed(0), check_faces=False)
show_video(out.frames[0], fps=4, title="face_aware, strength 1.0")'''),
    md("""
## The four strategies, measured

The same references and seed for all four. Each line gives the mean identity score with its standard
error over the eight people; the effects below are paired differences against the implicit strategy, read
against the smallest difference that matters.
"""),
    code('''videos, scores = {}, {}
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
print(metrics.describe_effect("face_aware - explicit", *effect(scores["face_aware"], scores["explicit"])))'''),
    code('''fig = show_images(torch.cat([videos[s][0, ::3] for s in STRATEGIES]), ncols=len(videos["explicit"][0, ::3]),
                  suptitle="rows: " + ", ".join(STRATEGIES))
fig.savefig(figure_path("06_strategies.png"), dpi=100)'''),
    md("""
## Do the identity tokens carry the identity?

Explicit identity can only work if the tokens differ from face to face and the model reads them. Two
measures (the training monitor logs both): how much the tokens of different faces differ, relative to their
size, and how much the model's prediction changes when a frame gets *another* face's tokens instead of its
own.
"""),
    code('''model = pipe.model
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
      f"{(own - other).norm() / own.norm():.3f} (relative)")'''),
    md("""
## The identity_strength slider

Move the slider to draw the first person again from the references alone at that strength. At 0 the
tokens are switched off and the model draws *somebody*; as you raise it, watch the face become the person in
the references. (When the notebook runs unattended, the cell only shows the first result.)
"""),
    code('''import io

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
display(widgets.VBox([widgets.HBox([slider, box]), label, view]))'''),
    md("""
## The trade-off, measured

Too little strength and the face is somebody else; too much and, the article says, the model becomes
rigid: less change of pose and expression. We draw 3 chunks from the references alone at each strength and
measure both: the identity score, and *variety* (mean change between consecutive frames within a shot) as a
fraction of the variety of real clips. The y axis is fixed, so a small difference looks small.
"""),
    code('''strengths = [0.0, 0.5, 1.0, 1.5] if QUICK else [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
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
    print(f"strength {s:.2f}: identity {mean:.3f} +- {se:.3f}, variety {sweep['variety'][-1]:.2f} x real")'''),
    code('''import matplotlib.pyplot as plt

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
fig.savefig(figure_path("06_strength.png"), dpi=100)'''),
    md("""
Where does more strength stop helping? Below, the smallest strength that is not lower than the best one by
a difference that matters (more strength than that buys nothing that matters), and the effect of strength
1.0 against 0.
"""),
    code('''best = max(range(len(strengths)), key=lambda i: sweep["identity"][i])
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
      f"| variety {sweep['variety'][i1] - sweep['variety'][i0]:+.2f} x real")'''),
    md("""
## More references

1, 3 and 5 references of the same face, averaged, from the references alone.
"""),
    code('''by_refs = {}
for r in (1, 3, 5):
    o = pipe.generate(reference_images=clips.references[:, :r], num_frames=7, strategy="explicit", keyframe=False,
                      identity_strength=1.0, num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                      check_faces=False, progress=False)
    by_refs[r] = per_video(o.frames)
    mean, se = metrics.mean_and_se(by_refs[r])
    print(f"{r} reference(s): identity {mean:.3f} +- {se:.3f}")
print(metrics.describe_effect("3 references - 1 reference", *effect(by_refs[3], by_refs[1])))
print(metrics.describe_effect("5 references - 3 references", *effect(by_refs[5], by_refs[3])))'''),
    md("""
## What we measured

The printed lines above are this notebook's result, with their standard errors: how well the model draws
a person it never saw from references alone (score and top-1), how the four strategies compare over three
chunks, how far the tokens of different faces differ and how much the model reacts to them, where more
`identity_strength` stops helping and what it costs in variety, and what more references add. The verdicts
are printed by the cells, from the effect sizes; read them, not the headings.

**Question.** If the identity score keeps rising with strength while variety falls, where would *you* set
the slider for a 10-second shot of a talking character, and what would you measure to decide?
"""),
]

# ---------------------------------------------------------------------------------------------- 08_training
TRAINING = [
    md("""
# 08 · Training the video model

The shipped model was trained with `labkit.train`. Here you train a tiny one yourself and see it learn.

By the end of this notebook you will be able to:
- explain what one training step of a diffusion model does (noise, predict, regress) and write its target;
- train the `cpu-learner` preset on this machine, and `gpu-small` on a GPU runtime;
- read a loss curve and the training monitor, and say why one checkpoint can serve four strategies
  (conditions are dropped at random).
"""),
    code(SETUP),
    code(DEVICE),
    md("""
## The presets

All presets train **image-first**: single frames in large batches with no context frames, where the
only way to draw the right person is to read the identity tokens (about 8x more identity examples per
CPU-second than clips), then clips with context frames and cuts, with single frames still mixed in.
`cpu-learner` (single frames only, about 8 minutes on 2 CPU cores) learns to draw the person in the
references from pure noise. `cpu-ship` is what the shipped checkpoint was trained with, on one thread of a
2-core CPU (its record is below). `gpu-small` is sized for one GPU (bf16 autocast, `torch.compile`); it has
not been run in this repository yet, because no GPU was lent to it.
"""),
    code('''from dataclasses import replace

from labkit.train import PRESETS, make_batch, plot_losses, train

for name in ("cpu-learner", "cpu-ship", "gpu-small"):
    p = PRESETS[name]
    print(f"{name:10s} steps {p.steps:6d} (single frames first: {p.image_steps:5d})  images/batch "
          f"{p.image_batch_size:3d}  clips/batch {p.batch_size:3d}  model {p.model}")'''),
    md("""
## One batch

Every step renders fresh clips of training identities and decides, clip by clip, which conditions the
model gets: identity tokens (dropped 30% of the time), face masks, and clean context frames (none, a
keyframe, the first frames of the clip, or both). Frames that are *given* are not part of the loss.
"""),
    code('''import torch

from labkit.common import figure_path, show_images
from labkit.faces import FaceRecognitionBackbone

recognizer = FaceRecognitionBackbone(device=device)
cfg = replace(PRESETS["cpu-learner"], device=str(device))
batch = make_batch(cfg, step=0, recognizer=recognizer, device=device)
print({k: tuple(v.shape) for k, v in batch.items()})
print("given frames of clip 0:", batch["given"][0].int().tolist(), " cuts:", batch["cuts"][0].int().tolist())
fig = show_images(batch["frames"][:2].reshape(-1, 3, cfg.size, cfg.size).cpu(), ncols=cfg.num_frames,
                  suptitle="two training clips (given frames included)")'''),
    md("""
## Exercise: the v-prediction target

The model predicts **v** (Salimans & Ho), a mix of the noise and the clean frames:
`v = sqrt(alpha_bar_t) * noise - sqrt(1 - alpha_bar_t) * x0`, where `alpha_bar_t` is the scheduler's
`alphas_cumprod[t]`. Write it for a batch `x0` of shape (B, ...) and timesteps `t` of shape (B,).

The cell below is a stub: **replace `raise NotImplementedError(...)` with your code** and run the check. It
prints PASS or FAIL for each case; until every case passes, the rest of the notebook uses labkit's own
implementation, so the notebook runs either way. After a failed check, `hint("v_target")`
explains what the failing cases mean (ask again for a more specific hint), and `solution("v_target")` shows a
worked solution.
"""),
    code('''def my_v_target(x0, noise, alphas_cumprod, t):
    # TODO (exercise): v for every sample at its own timestep t, broadcast over the frame dimensions
    raise NotImplementedError("exercise v_target: write this function, then run the cell")'''),
    code('''from labkit.exercises import check, hint, solution

# yours once every case passes, labkit's own until then: the notebook runs either way
my_v_target = check("v_target", my_v_target).function'''),
    md("""
## Train

On a CPU this trains the `cpu-learner` preset: single frames only, 1,800 steps, about 8 minutes on 2 cores
(quick mode: 60 steps). Every 300 steps the run draws 8 held-out people from their references alone and the
figure below refreshes: the loss, the identity score and top-1 identification of those samples, and the
samples themselves under their references. On a GPU runtime (and not in quick mode) it trains `gpu-small`
instead. The run folder holds an atomic checkpoint: interrupt the cell and run it again, and training
resumes where it stopped, with the same data order.
"""),
    code('''from IPython.display import display
from matplotlib.figure import Figure

from labkit.common import QUICK, image_strip

if device.type == "cuda" and not QUICK:
    run_cfg, run_dir = replace(PRESETS["gpu-small"], device="cuda"), "runs/gpu-small"
else:
    run_cfg = replace(PRESETS["cpu-learner"], device=str(device), steps=60 if QUICK else 1800,
                      monitor_every=30 if QUICK else 300)
    run_dir = "runs/cpu-learner-quick" if QUICK else "runs/cpu-learner"


def live_figure(records, samples, references, losses):
    """Loss, the references-only score and the latest samples, in one figure."""
    fig = Figure(figsize=(11, 3.2))
    ax_loss, ax_score, ax_grid = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.6]})
    ax_loss.plot([s for s, _ in losses], [v for _, v in losses], alpha=0.5)
    ax_loss.set(yscale="log", xlabel="step", title="denoising loss")
    steps_ = [r["step"] for r in records]
    ax_score.plot(steps_, [r["score"] for r in records], "o-", label="identity score")
    ax_score.plot(steps_, [r["top1"] for r in records], "s--", label="top-1 among 8")
    ax_score.set(ylim=(-0.1, 1.05), xlabel="step", title="references only")
    ax_score.legend(fontsize=7)
    ax_grid.imshow(image_strip(torch.cat([references, samples]), ncols=8), interpolation="nearest")
    ax_grid.set_axis_off()
    ax_grid.set_title(f"step {records[-1]['step']}: references (top), samples from pure noise", fontsize=9)
    fig.tight_layout()
    return fig


live = display(Figure(figsize=(1, 1)), display_id=True)
threads = torch.get_num_threads()
result = train(run_cfg, run_dir, resume=True,
               on_monitor=lambda *a: live.update(live_figure(*a)))
torch.set_num_threads(threads)
speed = result["images_per_second"] or 0
print(f"loss {result['loss_first_20']:.3f} -> {result['loss_last_20']:.3f} in {result['seconds_this_session']:.0f} s, "
      f"{speed:.0f} images/s")'''),
    code('''display(plot_losses(result["losses"]))'''),
    md("""
## The larger preset: what a GPU buys

`gpu-small` is 2.7x wider and 2x deeper, with batches of 256 frames and 64 clips. On a GPU runtime the cell
above trains it. On a CPU we do not start it: `python -m labkit.train --preset gpu-small --estimate` times one
step of each kind at a small batch, scales it to the preset's, and says how long it would take here.
"""),
    code('''import subprocess
import sys

if device.type == "cuda":
    print("this runtime has a GPU: the training cell above trained gpu-small")
else:  # in a separate process, so the large model's memory is not added to this notebook's
    estimate = [sys.executable, "-m", "labkit.train", "--preset", "gpu-small", "--estimate", "--device", "cpu"]
    print(subprocess.run(estimate, capture_output=True, text=True, check=True).stdout)'''),
    md("""
## The shipped model's training

The shipped checkpoint keeps a record of its own run next to its weights (`training.json`): the command,
the steps, the wall time, the CPU, and the loss every few steps. Compare its curve with yours.
"""),
    code('''import json

import matplotlib.pyplot as plt

from labkit.common import data_path

record = json.loads((data_path("identity_video_dit") / "training.json").read_text())
print(record["command"])
print(f"{record['steps']} steps in {record['wall_minutes']:.0f} min on {record['cpu']}; "
      f"loss {record['loss_first_100']:.3f} -> {record['loss_last_100']:.3f}")
steps_, loss_ = zip(*record["loss_every_10_steps"])
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(steps_, loss_, label="shipped (cpu-ship)")
ax.plot([s for s, _ in result["losses"]], [v for _, v in result["losses"]], alpha=0.6, label="yours")
ax.set_yscale("log")
ax.set_xlabel("step")
ax.set_ylabel("denoising loss (v-MSE)")
ax.legend()
fig.tight_layout()
fig.savefig(figure_path("08_loss_curves.png"), dpi=100)'''),
    md("""
Every 500 steps the run drew 8 held-out people from their references alone and logged the training
monitor: the identity score of those samples, top-1 identification among the 8, how different the
identity tokens of different faces are (token spread), and how much the prediction changes when another
face's tokens are given (swap sensitivity). A run whose tokens collapse shows it here within minutes.
"""),
    code('''from IPython.display import display

from labkit.train import plot_monitor

display(plot_monitor(record["monitor"]))'''),
    md("""
## Samples: your model and the shipped one

The same held-out references through both, drawn from pure noise and the references alone
(`keyframe=False`), and scored with `identity_scores`. Look at the rows: which model draws faces, and
which draws the person in the references?
"""),
    code('''from labkit import metrics
from labkit.pipeline import ReferenceConditionedGenerator, make_scheduler
from labkit.synthfaces import make_clips, test_ids

refs = make_clips(test_ids(8), num_frames=1, size=32, num_refs=3, generator=torch.Generator().manual_seed(0)).references
mine = ReferenceConditionedGenerator(result["model"].to(device).eval(), make_scheduler("ddim"), recognizer=recognizer)
shipped = ReferenceConditionedGenerator.from_shipped(device=device)
rows, per_person = [], {}
for name, pipe in (("yours", mine), ("shipped", shipped)):
    out = pipe.generate(reference_images=refs, num_frames=1, keyframe=False, strategy="explicit",
                        identity_strength=1.0, identity_guidance=2.0, num_inference_steps=10 if QUICK else 20,
                        generator=torch.Generator().manual_seed(0), check_faces=False, progress=False)
    rows.append(out.frames[:, 0].cpu())
    per_person[name] = metrics.identity_scores(out.frames.cpu(), refs, recognizer).mean(1)
    mean, se = metrics.mean_and_se(per_person[name])
    top1 = metrics.identification_top1(out.frames.cpu(), refs, recognizer)
    print(f"{name:>8}: identity score {mean:.3f} +- {se:.3f}, top-1 among 8 people {top1:.2f}")
print(metrics.describe_effect("shipped - yours (same 8 people)",
                              *metrics.mean_and_se(per_person["shipped"] - per_person["yours"])))
fig = show_images(torch.cat([refs[:, 0], *rows]), ncols=8,
                  suptitle="a reference / your cpu-learner model / the shipped model (references only)")
fig.savefig(figure_path("08_samples.png"), dpi=100)'''),
    md("""
## From images to video

Your model saw single frames only: it learned to draw *a* frame of the person in the references. A video
model must also make 8 frames that agree with each other, continue from given frames, and keep the person
across a cut. The shipped model learned that in its second phase: clips of 8 frames with a keyframe, the
previous chunk's last frames, or nothing given, and cuts, with single frames still mixed in. On this CPU that
phase took about 2,500 clip steps (about 25 minutes), more than this notebook's budget, so here is its
result: three chunks drawn from the references alone, with a cut before each chunk. Compare the frames
within a chunk (they agree) and across the cuts (the person stays).
"""),
    code('''video = shipped.generate(reference_images=refs[:2], num_frames=19, keyframe=False, strategy="explicit",
                         identity_strength=1.0, num_inference_steps=10 if QUICK else 20,
                         generator=torch.Generator().manual_seed(1), check_faces=False, progress=False)
per_chunk = metrics.identity_scores(video.frames.cpu(), refs[:2], recognizer).mean(0)
print("identity score per frame:", " ".join(f"{v:.2f}" for v in per_chunk.tolist()))
print("chunks start at frames", video.chunk_starts)
fig = show_images(torch.cat([refs[0, :2], video.frames[0, ::2].cpu()]), ncols=12,
                  suptitle="two of the references, then every 2nd frame of the video (3 chunks, cut before each)")'''),
    md("""
## What we measured

The loss fell from the first number to the second above, in the time printed, on this machine. Training
throughput in clips per second is the figure that decides what a CPU can train; `python -m labkit.bench
speed` measures it with the shipped preset, and sampling seconds per 16-frame clip (and, on a GPU, the
model FLOPs utilisation in bf16).

**Question.** Identity tokens are dropped for 30% of the clips. What would the model lose if they were never
dropped, and what would it lose if they were dropped 90% of the time?
"""),
]


def main():
    for name, cells in (("01_drift", DRIFT), ("06_reference_conditioning", REFCOND), ("08_training", TRAINING)):
        write_notebook(cells, name)


if __name__ == "__main__":
    main()
