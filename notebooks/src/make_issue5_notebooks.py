"""Write notebooks 01_drift, 06_reference_conditioning and 08_training (no outputs) with nbformat.

    .venv/bin/python notebooks/src/make_issue5_notebooks.py
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
- read a face-similarity number against its **ceiling** (real frames) and **floor** (strangers).
"""),
    code(SETUP),
    code(DEVICE),
    md("""
## The model and the recognizer

`ReferenceConditionedGenerator.from_shipped()` loads the small video model shipped in `data/` (an
`IdentityVideoDiT`, trained in this repository on a 2-core CPU, so its faces are blurry) and the frozen
face recognizer `f` that turns a face into a 512-number embedding. We will only use `f` to *measure*.
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
ref_emb = metrics.embed_frames(recognizer, real.references)          # (B, 3, 512)
levels = metrics.identity_levels(recognizer, test_ids(12, offset=100), size=size)
print({k: round(v, 3) for k, v in levels.items() if k in ("ceiling", "floor")})'''),
    md("""
**Ceiling and floor.** A cosine similarity of, say, 0.6 means nothing on its own. The ceiling is what *real*
frames of the same person score against the references; the floor is what strangers score. The
normalised identity `(sim - floor) / (ceiling - floor)` is 1 for "as good as real" and 0 for "a stranger".

## Exercise: the denoising step

Write the article's `denoise_step`: ask the model for its prediction at timestep `t`, then let the
scheduler step from `x_t` to `x_{t-1}`. diffusers models return an object with `.sample`; schedulers return
an object with `.prev_sample`. Pass `generator` to `scheduler.step` so that the noise it draws is
reproducible.
"""),
    code('''def my_denoise_step(x_t, model, t, scheduler, generator=None, model_kwargs=None):
    out = model(x_t, t, **(model_kwargs or {}))
    prediction = out.sample if hasattr(out, "sample") else out
    # TODO (exercise): one scheduler step; return the previous sample
    return scheduler.step(prediction, t, x_t, generator=generator).prev_sample'''),
    code('''from labkit.exercises import check

check("denoise_step", my_denoise_step)'''),
    md("""
## Sampling the same conditions twice

Both runs get the same keyframe and the same starting noise. Only the noise that the **DDPM** sampler draws
*during* sampling differs (two generators). With **DDIM** (eta = 0) no noise is drawn after the start, so
the two runs are identical: the drift below is the sampler's doing.

The shipped model was trained for under an hour on a CPU and cannot yet draw a face from pure noise.
So, like the generator (`init_strength=0.7`), we start SDEdit-style: every frame begins as the keyframe
noised to `t = 700` (of 1000), and only the remaining steps run. Try `init_strength = 1.0` below to see
what pure noise gives.
"""),
    code('''init_strength = 0.7


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

For each run: the normalised identity of every frame against the references, and the cosine between the two
runs' frames. A stochastic sampler makes the two runs disagree, and each frame wanders from the reference.
"""),
    code('''def normalised(frames):
    sim = metrics.reference_similarity(metrics.embed_frames(recognizer, frames), ref_emb)
    return metrics.normalised_identity(sim, levels["ceiling"], levels["floor"])

emb_a, emb_b = metrics.embed_frames(recognizer, ddpm_a), metrics.embed_frames(recognizer, ddpm_b)
between = torch.nn.functional.cosine_similarity(emb_a, emb_b, dim=-1)
for name, frames in [("real", real.frames[:, 1:]), ("DDPM A", ddpm_a), ("DDPM B", ddpm_b), ("DDIM", ddim_a)]:
    print(f"{name:7s} normalised identity {normalised(frames).mean():.3f}")
print(f"cosine between the two DDPM runs, frame by frame: {between.mean():.3f} (1.0 = the same face)")'''),
    md("""
## Drift over a long video

A long video is made in chunks; each chunk continues from the last two frames of the previous one, with a
cut between chunks. With only that temporal context (the **implicit** strategy), nothing pulls the face back
to the reference, so errors compound. With **explicit** identity tokens the references are given to every
chunk.
"""),
    code('''num_chunks = 4 if QUICK else 8
num_frames = (chunk - 1) + (num_chunks - 1) * (chunk - 2)
per_chunk = {}
for strategy in ("implicit", "explicit"):
    out = pipe.generate(reference_images=real.references, num_frames=num_frames, strategy=strategy,
                        generator=torch.Generator().manual_seed(0), num_inference_steps=10 if QUICK else 20,
                        check_faces=False, progress=False)
    norm = normalised(out.frames.cpu())
    bounds = out.chunk_starts + [num_frames]
    per_chunk[strategy] = [norm[:, a:b].mean().item() for a, b in zip(bounds[:-1], bounds[1:])]
    print(strategy, [round(v, 2) for v in per_chunk[strategy]])'''),
    code('''import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(5, 3))
for name, values in per_chunk.items():
    ax.plot(range(1, len(values) + 1), values, marker="o", label=name)
ax.axhline(0, color="grey", lw=0.8, ls="--")
ax.set_xlabel("chunk (a cut before each)")
ax.set_ylabel("normalised identity")
ax.legend()
ax.set_title("Identity over a long video")
fig.tight_layout()
fig.savefig(figure_path("01_drift_chunks.png"), dpi=100)'''),
    md("""
Two claims of the course, checked on these numbers (not asserted): the implicit strategy's identity falls
over the chunks, and identity tokens keep it higher.
"""),
    code('''imp, exp = per_chunk["implicit"], per_chunk["explicit"]
print(f"implicit: chunk 1 {imp[0]:.2f} -> chunk {len(imp)} {imp[-1]:.2f}: "
      + ("falls" if imp[-1] < imp[0] - 0.05 else "does NOT fall clearly"))
gap = sum(exp) / len(exp) - sum(imp) / len(imp)
print(f"explicit minus implicit, mean over chunks: {gap:+.3f}: "
      + ("tokens help" if gap > 0.02 else "tokens make no clear difference with this checkpoint"))'''),
    md("""
## What we measured

The numbers above are this notebook's result: how far two DDPM runs of the same conditions end apart
(DDIM runs do not differ at all), and how the normalised identity evolves chunk by chunk. With the shipped
checkpoint, the implicit strategy's identity falls from chunk to chunk: every chunk continues from
generated frames, small errors are copied forward, and nothing pulls the face back to the references.

Identity tokens were meant to pull it back, yet with the shipped checkpoint the explicit curve sits on the
implicit one. That claim of the course is **not** borne out by this model, and notebook 06 measures why: the
model was trained for under an hour on a shared 2-core CPU, and its identity tokens came out almost the
same for every face, so it learned to take the face from the keyframe and context frames instead. A GPU
run (`gpu-small`, notebook 08) is meant to fix this. `python -m labkit.bench drift` measures all four
strategies on more identities.

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
- generate a video of a held-out face from its references, with the four strategies of the course;
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
Five references of a face the model never saw in training, each in its own pose, light and background.
"""),
    code('''ids = test_ids(3 if QUICK else 8)
clips = make_clips(ids, num_frames=24, size=size, num_refs=5, num_cuts=2, generator=torch.Generator().manual_seed(0))
scoring = make_clips(ids, num_frames=1, size=size, num_refs=3, generator=torch.Generator().manual_seed(1))
score_emb = metrics.embed_frames(recognizer, scoring.references)   # separate references, used only to score
levels = metrics.identity_levels(recognizer, test_ids(12, offset=100), size=size)
fig = show_images(clips.references[0], titles=[f"ref {i}" for i in range(5)], suptitle=f"identity {int(ids[0])}")'''),
    md("""
## Exercise: averaging references

The article averages the encoded references "for a robust identity". With unit-norm face embeddings, the
mean of several is shorter than 1, so it is normalised again. Write `mean_reference_embedding` for
embeddings of shape `(R, D)` (one identity) or `(B, R, D)` (a batch), returning `(D,)` or `(B, D)` unit vectors.
"""),
    code('''def mean_reference_embedding(embeddings):
    # TODO (exercise): average over the references, then re-normalise to unit length
    mean = embeddings.mean(dim=-2)
    return mean / mean.norm(dim=-1, keepdim=True)'''),
    code('''from labkit.exercises import check

check("mean_reference_embedding", mean_reference_embedding)'''),
    md("""
## Generating with references

`generate` takes the references, a number of frames, `identity_strength` and a strategy. Frames beyond one
model call are made in chunks with a cut between chunks. The `face_masks` tell the face-aware strategy
where the face is in each frame (here: the layout of a real clip).
"""),
    code('''steps = 10 if QUICK else 20
num_frames = 19  # 3 chunks: 7 new frames, then 6 per chunk
out = pipe.generate("a cartoon face", clips.references[:, :3], num_frames=num_frames, identity_strength=0.8,
                    strategy="face_aware", face_masks=clips.masks[:, :num_frames], num_inference_steps=steps,
                    generator=torch.Generator().manual_seed(0), check_faces=False)
show_video(out.frames[0], fps=4, title="face_aware, strength 0.8")'''),
    md("""
## The four strategies, measured

The same references, the same seed. Scores are normalised identity against references the generator did
not see.
"""),
    code('''def score(frames, references=score_emb):
    sim = metrics.reference_similarity(metrics.embed_frames(recognizer, frames), references)
    return metrics.normalised_identity(sim, levels["ceiling"], levels["floor"]).mean().item()

videos = {}
for strategy in STRATEGIES:
    o = pipe.generate(reference_images=clips.references[:, :3], num_frames=num_frames, strategy=strategy,
                      face_masks=clips.masks[:, :num_frames], num_inference_steps=steps,
                      generator=torch.Generator().manual_seed(0), check_faces=False, progress=False)
    videos[strategy] = o.frames.cpu()
    print(f"{strategy:10s} normalised identity {score(videos[strategy]):.3f}  variety "
          f"{metrics.variety(videos[strategy], o.cuts).mean():.3f}")
print(f"real clips  variety {metrics.variety(clips.frames, clips.cuts).mean():.3f}")'''),
    md("""
## Do the identity tokens carry the identity?

Explicit identity can only beat the implicit strategy if the tokens differ from face to face. Two measures:
how much the tokens of different faces differ (relative to their size), and how much the model's prediction
changes when a clip gets *another* face's tokens instead of its own.
"""),
    code('''model = pipe.model
emb = metrics.embed_frames(recognizer, clips.references[:, :3]).to(device)
with torch.no_grad():
    tokens = model.encode_identity(emb)                      # (B, T, D)
    spread = (tokens - tokens.mean(0)).norm(dim=-1).mean() / tokens.norm(dim=-1).mean()
    x = torch.randn(len(ids), model.config.max_frames, 3, size, size, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(500)


    def predict(tok, strength=1.0):
        kwargs = {"identity_tokens": tok, "identity_strength": strength}
        return model(x.to(device), t, cross_attention_kwargs=kwargs).sample

    own, other, off = predict(tokens), predict(tokens.roll(1, 0)), predict(tokens, 0.0)
print(f"tokens of different faces differ by {100 * spread:.2f}% of their size")
print(f"prediction change: tokens on vs off {(own - off).abs().mean():.4f}, own vs another face's tokens "
      f"{(own - other).abs().mean():.4f}")'''),
    code('''fig = show_images(torch.cat([videos[s][0, ::3] for s in STRATEGIES]), ncols=len(videos["explicit"][0, ::3]),
                  suptitle="rows: " + ", ".join(STRATEGIES))
fig.savefig(figure_path("06_strategies.png"), dpi=100)'''),
    md("""
## The identity_strength slider

Move the slider to regenerate one chunk at that strength. (When the notebook runs unattended, the cell
only shows the first result.)
"""),
    code('''import io

import ipywidgets as widgets
from IPython.display import display
from PIL import Image

from labkit.common import image_strip

view = widgets.Image(format="png")
label = widgets.HTML()

def render(strength):
    o = pipe.generate(reference_images=clips.references[:1, :3], num_frames=7, identity_strength=strength,
                      strategy="explicit", num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                      check_faces=False, progress=False)
    buf = io.BytesIO()
    strip = image_strip(torch.cat([clips.references[0, :3], o.frames[0].cpu()]))
    Image.fromarray(strip).resize((strip.shape[1] * 3, strip.shape[0] * 3), Image.NEAREST).save(buf, "png")
    view.value = buf.getvalue()
    label.value = f"strength {strength:.2f}: normalised identity <b>{score(o.frames.cpu(), score_emb[:1]):.3f}</b>"

slider = widgets.FloatSlider(value=0.8, min=0.0, max=1.5, step=0.1, description="identity_strength",
                             continuous_update=False, style={"description_width": "initial"})
slider.observe(lambda change: render(change["new"]), names="value")
render(slider.value)
display(widgets.VBox([slider, label, view]))'''),
    md("""
## The trade-off, measured

Too little strength and the face drifts; too much and, the article says, the model becomes rigid: less
change of pose and expression. We measure both: normalised identity, and *variety* (mean change between
consecutive frames within a shot), as a fraction of the variety of real clips.
"""),
    code('''strengths = [0.0, 0.5, 1.0, 1.5] if QUICK else [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
real_variety = metrics.variety(clips.frames, clips.cuts).mean().item()
sweep = {"identity": [], "variety": []}
for s in strengths:
    o = pipe.generate(reference_images=clips.references[:, :3], num_frames=num_frames, identity_strength=s,
                      strategy="explicit", num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                      check_faces=False, progress=False)
    sweep["identity"].append(score(o.frames.cpu()))
    sweep["variety"].append(metrics.variety(o.frames.cpu(), o.cuts).mean().item() / real_variety)
    print(f"strength {s:.2f}: identity {sweep['identity'][-1]:.3f}, variety {sweep['variety'][-1]:.2f} x real")'''),
    code('''import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(strengths, sweep["identity"], marker="o", label="normalised identity")
ax.plot(strengths, sweep["variety"], marker="s", label="variety / real variety")
ax.axvspan(0.7, 0.85, color="orange", alpha=0.2, label="article's sweet spot")
ax.set_xlabel("identity_strength")
ax.legend()
ax.set_title("Identity vs variety")
fig.tight_layout()
fig.savefig(figure_path("06_strength.png"), dpi=100)'''),
    code('''d_identity = sweep["identity"][-1] - sweep["identity"][0]
d_variety = sweep["variety"][-1] - sweep["variety"][0]
print(f"from strength {strengths[0]} to {strengths[-1]}: identity {d_identity:+.3f}, variety {d_variety:+.2f} x real")
print("a trade-off (identity up, variety down)" if d_identity > 0.02 and d_variety < 0 else
      "no clear trade-off with this checkpoint: see the note below")'''),
    md("""
## More references

1, 3 and 5 references of the same face, averaged.
"""),
    code('''for r in (1, 3, 5):
    o = pipe.generate(reference_images=clips.references[:, :r], num_frames=num_frames, strategy="explicit",
                      num_inference_steps=steps, generator=torch.Generator().manual_seed(0), check_faces=False,
                      progress=False)
    print(f"{r} reference(s): normalised identity {score(o.frames.cpu()):.3f}")'''),
    md("""
## What we measured

The tables above are this notebook's result. Read them honestly:

- **strategies**: with the shipped checkpoint, anchoring on the keyframe helps most; explicit and
  face-aware identity are about level with the implicit strategy;
- **the tokens**: the cell "Do the identity tokens carry the identity?" shows why: the tokens of different
  faces differ by well under 1% of their size, and swapping in another face's tokens barely changes the
  prediction. The model, trained for under an hour on a 2-core CPU, learned to copy the face from the
  keyframe and context frames (given in 85% of training clips) rather than read it from the tokens;
- **strength and references**: for the same reason, identity_strength and the number of references move the
  identity score very little, and the identity/variety trade-off the article describes (sweet spot 0.7-0.85)
  does not show with this model. Variety here is mostly frame-to-frame flicker of a small model, several
  times that of real clips, not pose changes.

A model trained longer (the `gpu-small` preset, notebook 08) is meant to show the trade-off;
`python -m labkit.bench drift` measures it on more identities.

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
- train the `cpu-tiny` preset on this machine, and `gpu-small` on a GPU runtime;
- read a loss curve, and say why one checkpoint can serve four strategies (conditions are dropped at random).
"""),
    code(SETUP),
    code(DEVICE),
    md("""
## The presets

`cpu-tiny` shows learning within minutes on 2 CPU cores. `cpu-ship` is what the shipped checkpoint was
trained with, on a shared 2-core CPU. `gpu-small` is sized for one GPU in about 15 minutes (bf16 autocast,
`torch.compile`); it has not been run in this repository yet, because no GPU was available.
"""),
    code('''from dataclasses import replace

from labkit.train import PRESETS, make_batch, train

for name in ("cpu-tiny", "cpu-ship", "gpu-small"):
    p = PRESETS[name]
    print(f"{name:10s} steps {p.steps:6d}  batch {p.batch_size:3d}  model {p.model}")'''),
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
cfg = replace(PRESETS["cpu-tiny"], device=str(device))
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
"""),
    code('''def my_v_target(x0, noise, alphas_cumprod, t):
    # TODO (exercise): broadcast alpha_bar_t over the frame dimensions
    ab = alphas_cumprod[t].reshape(-1, *[1] * (x0.ndim - 1))
    return ab.sqrt() * noise - (1 - ab).sqrt() * x0'''),
    code('''from labkit.exercises import check

check("v_target", my_v_target)'''),
    md("""
## Train

Quick mode trains `cpu-tiny` for fewer steps. On a GPU runtime (and not in quick mode) this trains
`gpu-small` instead. The run folder holds an atomic checkpoint: interrupt the cell and run it again, and
training resumes where it stopped, with the same data order.
"""),
    code('''from labkit.common import QUICK

if device.type == "cuda" and not QUICK:
    run_cfg, run_dir = replace(PRESETS["gpu-small"], device="cuda"), "runs/gpu-small"
else:
    # Quick mode (CI) trains on one thread: on a busy shared CPU two threads mostly wait for each other.
    run_cfg = replace(PRESETS["cpu-tiny"], device=str(device), steps=60 if QUICK else 150,
                      num_threads=1 if QUICK else None)
    run_dir = "runs/cpu-tiny-quick" if QUICK else "runs/cpu-tiny"
threads = torch.get_num_threads()
result = train(run_cfg, run_dir, resume=True)
torch.set_num_threads(threads)
print(f"loss {result['loss_first_20']:.3f} -> {result['loss_last_20']:.3f} in {result['seconds_this_session']:.0f} s, "
      f"{result['clips_per_second'] or 0:.1f} clips/s")'''),
    code('''from IPython.display import Image, display

display(Image(filename=f"{run_dir}/loss.png"))'''),
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
## Samples: your model and the shipped one

The same held-out references through both. A quick run (60 steps) has only started to learn: its samples
are still noise. The shipped model had a few thousand steps (`training.json` above): blurry faces with the
right colours and layout. A GPU run would have far more.
"""),
    code('''from labkit.pipeline import ReferenceConditionedGenerator, make_scheduler
from labkit.synthfaces import make_clips, test_ids

refs = make_clips(test_ids(2), num_frames=1, size=32, num_refs=3, generator=torch.Generator().manual_seed(0)).references
mine = ReferenceConditionedGenerator(result["model"].to(device).eval(), make_scheduler("ddim"), recognizer=recognizer)
shipped = ReferenceConditionedGenerator.from_shipped(device=device)
rows = []
for pipe in (mine, shipped):
    out = pipe.generate(reference_images=refs, num_frames=7, strategy="explicit",
                        num_inference_steps=10 if QUICK else 20, generator=torch.Generator().manual_seed(0),
                        check_faces=False, progress=False)
    rows.append(out.frames[0].cpu())
fig = show_images(torch.cat([refs[0, :1].expand(7, -1, -1, -1), *rows]), ncols=7,
                  suptitle="reference / your cpu-tiny model / shipped model")
fig.savefig(figure_path("08_samples.png"), dpi=100)'''),
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
