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
# # 09 · Several characters: identity banks, separators, region routing, and bleed
#
# One face is the easy case. With two to four characters in a shot, every face region's identity attention
# can read *every* character's identity tokens, and features leak from one face into another: this is
# **bleed**, and in the worst case the faces **swap**.
#
# By the end you will be able to:
#
# * render scenes with 2-4 characters and their per-character face masks (`labkit.synthfaces.make_scenes`);
# * build identity tokens for several characters three ways: one **shared** bank, **per-character banks with
#   separators** (`MultiCharacterIdentityBank`), and per-character banks with **region routing**;
# * write the region-routing attention mask yourself (exercise);
# * measure bleed and swap rate, first in the attention (where identity mass goes) and then in generated
#   pixels (what the recognizer sees), and say what each number does and does not show.

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
# ## Scenes with several characters
#
# `make_scenes` places C characters side by side. They share the background, the light and the cuts, and each
# moves on its own. Every character has its own references and its own exact face mask, `(B, F, C, H, W)`.

# %%
import torch

from labkit.common import figure_path, show_images
from labkit.synthfaces import make_scenes, test_ids

NUM_SCENES = 4 if QUICK else 16
scenes = {c: make_scenes(test_ids(NUM_SCENES * c, offset=500).view(NUM_SCENES, c), num_frames=8, size=64,
                         num_refs=3, generator=torch.Generator().manual_seed(c)) for c in (2, 3, 4)}
s2 = scenes[2]
print("frames", tuple(s2.frames.shape), "masks", tuple(s2.masks.shape), "references", tuple(s2.references.shape))

# %%
pictures, titles = [], []
for c, s in scenes.items():
    pictures.append(s.frames[0, 0])
    titles.append(f"{c} characters")
    colours = torch.tensor([[1, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1]], dtype=torch.float)[:c]
    overlay = (s.masks[0, 0][:, None] * colours[:, :, None, None]).sum(0).clamp(-1, 1)
    pictures.append(0.5 * s.frames[0, 0] + 0.5 * overlay)
    titles.append("face masks")
fig = show_images(torch.stack(pictures), titles, ncols=6, size=1.8)
fig.savefig(figure_path("09_scenes.png"), dpi=80)

# %% [markdown]
# ## The measuring stick: real scenes
#
# Bleed and swap are measured with the frozen recognizer f (`labkit.metrics`): each character's region is
# cropped with its mask and compared with *every* character's references. `own` is the similarity to the
# right character, `bleed` the mean similarity to the others, and `swap rate` the share of regions whose best
# match is someone else. On real rendered scenes this is the best a generator could do, the ceiling.

# %%
from labkit.faces import FaceRecognitionBackbone, load_recognizer
from labkit.metrics import bleed_and_swap, embed_frames, scene_similarity

recognizer = FaceRecognitionBackbone(device=device)  # the identity encoder: the model's tokens come from it
scorer = load_recognizer()                           # the scoring recognizer: it measures own, bleed and swap
real = {}
for c, s in scenes.items():
    score_emb = embed_frames(scorer, s.references.flatten(0, 2)).view(*s.references.shape[:3], -1)
    real[c] = bleed_and_swap(scene_similarity(scorer, s.frames, s.masks, score_emb))
    print(f"real scenes, {c} characters: own {real[c]['own']:.3f}  bleed {real[c]['bleed']:.3f}  "
          f"swap rate {real[c]['swap_rate']:.1%}")

# %% [markdown]
# ## Identity tokens for several characters
#
# `MultiCharacterIdentityBank` follows the article's sketch: every character slot has its own identity bank
# (projection + learned query tokens), and a learned **separator** token follows each character's tokens. It
# also returns `token_character`, the owner of every token, which routing needs. In `"shared"` mode one bank
# serves everyone and there are no separators: the baseline.

# %%
from labkit.identity import MultiCharacterIdentityBank

bank = MultiCharacterIdentityBank(max_characters=4, embed_dim=64, num_tokens=4, backbone=recognizer).eval()
with torch.no_grad():
    for mode in bank.MODES:
        tokens, owner = bank.encode_multiple(scenes[3].references[:1], mode=mode)
        print(f"{mode:>7}: tokens {tuple(tokens.shape)}  owner of each token {owner.tolist()}")

# %% [markdown]
# ## Exercise: the region-routing mask
#
# Routing lets each character's face region attend **only** to that character's identity tokens. Write
# `my_region_routing_mask(character_masks, token_character, threshold=0.5)`:
#
# * `character_masks`: (B, F, C, N) floats in [0, 1], the share of each of the N attention tokens (patches)
#   covered by character c's face;
# * `token_character`: (L,) long, the character that owns each identity token;
# * return a bool tensor (B, F, N, L): True where query token n may attend to identity token l, which is when
#   the owner of l covers at least `threshold` of patch n. A patch that belongs to no face gets a row of False
#   (the attention block then gives it no identity update at all).
#
# The cell below is a stub: **replace `raise NotImplementedError(...)` with your code** and run the check. It
# prints PASS or FAIL for each case; until every case passes, the rest of the notebook uses labkit's own
# implementation, so the notebook runs either way. After a failed check, `hint("region_routing_mask")`
# explains what the failing cases mean (ask again for a more specific hint), and `solution("region_routing_mask")` shows a
# worked solution.
#
# Outside the notebook, `python -m labkit.exercises my_solutions.py` checks a file of your solutions.

# %%
from labkit.exercises import check, hint, solution


def my_region_routing_mask(character_masks, token_character, threshold=0.5):
    # TODO (exercise): a bool (B, F, N, L) mask: may patch n attend to identity token l?
    raise NotImplementedError("exercise region_routing_mask: write this function, then run the cell")


# yours once every case passes, labkit's own until then: the notebook runs either way
my_region_routing_mask = check("region_routing_mask", my_region_routing_mask).function

# %% [markdown]
# ## Bleed in the attention of the trained model
#
# The video model shipped with the kit (notebook 08) was trained on **one** character at a time. We give it a
# real two-character scene, slightly noised, and identity tokens for both characters, and record where each
# face region's identity attention goes, in every block:
#
# * **shared**: the references of all characters are pooled into one identity (what a single-character
#   pipeline does if you hand it everyone's pictures): every token carries a mix, so bleed is built in;
# * **concat**: each character's own tokens (the trained encoder applied per character), concatenated. The
#   shipped model never learned separator tokens, so none are inserted here: an untrained separator would
#   be noise. Whether a region prefers its own character's tokens is up to what the trained attention learned;
# * **routed**: the same tokens, with the routing mask, so other characters' tokens are out of reach.
#
# What is measured: the share of a region's identity-attention mass that lands on *other* characters' tokens.

# %%
import torch.nn.functional as F

from labkit.identity import region_routing_mask
from labkit.model import load_model
from labkit.pipeline import make_scheduler

model = load_model(device=device)
SIZE, GRID = model.config.sample_size, model.grid
scene = scenes[2]
frames = F.interpolate(scene.frames.flatten(0, 1), size=SIZE, mode="bilinear", antialias=True).view(
    NUM_SCENES, 8, 3, SIZE, SIZE)
masks = F.interpolate(scene.masks.flatten(0, 1), size=SIZE, mode="area").view(NUM_SCENES, 8, 2, SIZE, SIZE)
refs32 = F.interpolate(scene.references.flatten(0, 2), size=SIZE, mode="bilinear", antialias=True)
ref_emb = embed_frames(recognizer, refs32).view(NUM_SCENES, 2, 3, -1)  # (B, C, R, 512): for the tokens
score_emb = embed_frames(scorer, refs32).view(NUM_SCENES, 2, 3, -1)  # for own, bleed and swap


@torch.no_grad()
def scene_tokens(mode):
    """Identity tokens (B, L, D), the owner of each token (L,), and the routing mask or None."""
    if mode == "shared":
        tokens = model.encode_identity(ref_emb.flatten(1, 2).to(device))  # everyone's references pooled
        owner = torch.full((tokens.shape[1],), -1, dtype=torch.long)     # owned by no single character
        return tokens, owner, None
    per_character = [model.encode_identity(ref_emb[:, c].to(device)) for c in range(2)]
    tokens = torch.cat(per_character, dim=1)
    owner = torch.arange(2).repeat_interleave(per_character[0].shape[1])
    routing = region_routing_mask(masks, owner, grid=GRID).to(device) if mode == "routed" else None
    return tokens, owner, routing


@torch.no_grad()
def attention_to_others(mode, timestep=400):
    """Mean share of identity attention that each face region puts on other characters' tokens."""
    tokens, owner, routing = scene_tokens(mode)
    scheduler = make_scheduler("ddpm")
    noise = torch.randn(frames.shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(timestep)
    noisy = scheduler.add_noise(frames, noise, t).to(device)
    for block in model.blocks:
        block.attn.record_identity_attention = True
    model(noisy, t.to(device), face_masks=masks.sum(2).clamp(max=1).to(device),
          cross_attention_kwargs={"identity_tokens": tokens, "identity_strength": 1.0,
                                  "identity_attention_mask": routing})
    region = region_routing_mask(masks, torch.arange(2), grid=GRID)            # (B, F, N, C): n is in c
    shares = []
    for block in model.blocks:
        probs = block.attn.last_identity_attention.cpu()                       # (B, F, N, L)
        block.attn.record_identity_attention = False
        for c in range(2):
            other = (owner != c) if mode != "shared" else torch.ones_like(owner, dtype=torch.bool)
            mass = probs[..., other].sum(-1)                                    # (B, F, N)
            shares.append(mass[region[..., c]].mean())
    return torch.stack(shares).mean().item()


attention_share = {mode: attention_to_others(mode) for mode in ("shared", "concat", "routed")}
for mode, share in attention_share.items():
    print(f"{mode:>7}: {share:.2%} of each face region's identity attention reaches tokens that carry "
          f"{'a mix of all characters' if mode == 'shared' else 'another character'}")
print("uniform attention over two characters' tokens would give 50.0%")

# %% [markdown]
# A share close to 50% in `concat` means the attention cannot tell the two characters' tokens apart. One reason
# can be the tokens themselves: if the encoder gives two different faces nearly the same tokens, no attention
# can prefer the right ones. We compare how far apart the two characters' tokens are with how far apart the
# tokens of one character are from each other.

# %%
tokens, owner, _ = scene_tokens("concat")
mine, theirs = tokens[:, owner == 0], tokens[:, owner == 1]
between = (mine - theirs).norm(dim=-1).mean().item()
within = torch.cdist(mine, mine).sum().item() / (mine.shape[0] * mine.shape[1] * (mine.shape[1] - 1))
print(f"same token slot, two characters: distance {between:.3f}; two slots, one character: distance {within:.3f}")
print(f"ratio {between / within:.3f} (0 = the encoder ignores who the character is)")

# %% [markdown]
# ## Bleed and swap in generated pixels
#
# Attention mass is a cause; what a viewer sees is the effect. We now *generate* the rest of each
# two-character scene with the trained model and `ReferenceConditionedGenerator`, exactly as a single-character
# video is made: the scene's real first frame is the keyframe, and the new frames start from pure noise. The identity
# tokens come in four ways: **none** (no identity attention at all: the baseline), **shared**, **concat** and
# **routed** as above, with the real layout as face masks. Then the recognizer measures own, bleed and swap rate
# on each character's region of the generated frames, exactly as for the real scenes.
#
# Be careful with what this shows: the model was trained on single faces filling most of a 32x32 frame, and
# here each face gets a small part of it (printed below). Compare the modes with each other and with `none`,
# which says how much of the identity comes from the keyframe alone.

# %%
from labkit.pipeline import ReferenceConditionedGenerator

pipe = ReferenceConditionedGenerator(model, make_scheduler("ddim"))
MODES = ("none", "shared", "concat", "routed")


@torch.no_grad()
def generate_scene(mode, steps=10 if QUICK else 20, seed=0):
    """Frames 1..7 of every scene, generated from its real frame 0 with identity tokens given as ``mode``."""
    tokens, owner, _ = scene_tokens(mode) if mode != "none" else (None, None, None)
    out = pipe.generate(reference_images=frames[:, :1], num_frames=frames.shape[1] - 1,
                        strategy="implicit" if mode == "none" else "face_aware", identity_tokens=tokens,
                        identity_strength=1.0, face_masks=masks[:, 1:].sum(2).clamp(max=1),
                        character_masks=masks[:, 1:] if mode == "routed" else None,
                        token_character=owner if mode == "routed" else None,
                        generator=torch.Generator().manual_seed(seed), num_inference_steps=steps,
                        check_faces=False, progress=False)
    return out.frames.cpu()


face_pixels = masks.sum((-1, -2)).mean().item()
side = face_pixels**0.5
print(f"each face covers {face_pixels:.0f} of the {SIZE * SIZE} pixels (about {side:.0f}x{side:.0f})")
generated = {mode: generate_scene(mode) for mode in MODES}
later = masks[:, 1:]
sims = {mode: scene_similarity(scorer, video, later, score_emb) for mode, video in generated.items()}
sims["real scenes (ceiling)"] = scene_similarity(scorer, frames[:, 1:], later, score_emb)
pixel = {mode: bleed_and_swap(sim) for mode, sim in sims.items()}
for mode, m in pixel.items():
    print(f"{mode:>22}: own {m['own']:.3f}  bleed {m['bleed']:.3f}  own - bleed {m['own'] - m['bleed']:+.3f}  "
          f"swap rate {m['swap_rate']:.1%}")

# %%
import matplotlib.pyplot as plt

row = torch.stack([frames[b, 4] for b in (0, 1)] + [generated[m][b, 3] for b in (0, 1) for m in MODES])
order = [0, 2, 3, 4, 5, 1, 6, 7, 8, 9]  # per scene: real, then the four modes
fig = show_images(row[order], ["real frame 4", *MODES] * 2, ncols=5, size=1.8)
fig.savefig(figure_path("09_generated_scenes.png"), dpi=80)

# %% [markdown]
# ## The result
#
# The table collects what was measured: the attention share that reaches other characters and the
# recognizer's bleed and swap rate on generated two-character scenes, beside the real scenes. Routing drives
# the attention share to exactly zero by construction; whether that shows up in pixels depends on the
# model, because the temporal and spatial attention can still carry features from one face to the other,
# and because this model never saw two faces at once during training. The `none` row is the yardstick: if the
# three token modes give the same pixels as no tokens at all, the identity attention does not reach the pixels
# of this checkpoint (the token distances above say whether its encoder tells the characters apart), and the
# pixel columns measure what the keyframe carries, not the banks.

# %%
from IPython.display import Markdown, display

rows = ["| mode | identity attention to other characters | own | bleed | swap rate |", "|---|---|---|---|---|"]
for mode in MODES:
    m, share = pixel[mode], f"{attention_share[mode]:.1%}" if mode in attention_share else "-"
    rows.append(f"| {mode} | {share} | {m['own']:.3f} | {m['bleed']:.3f} | {m['swap_rate']:.1%} |")
m = pixel["real scenes (ceiling)"]
rows.append(f"| real scenes | - | {m['own']:.3f} | {m['bleed']:.3f} | {m['swap_rate']:.1%} |")
display(Markdown("\n".join(rows)))
from labkit.metrics import MEANINGFUL_DIFFERENCE, describe_effect, mean_and_se

eye = torch.eye(2, dtype=torch.bool)


def per_scene(sim):
    """own, bleed and swap rate of every scene (B,), so that two modes are compared scene by scene."""
    swapped = (sim.argmax(-1) != torch.arange(2)).float()
    return {"own": sim[..., eye].mean((1, 2)), "bleed": sim[..., ~eye].mean((1, 2)), "swap_rate": swapped.mean((1, 2))}


# own and bleed are cosines: the smallest difference that matters is MEANINGFUL_DIFFERENCE of the way from a
# stranger (floor) to a real frame (ceiling), in cosine; for the swap rate, that many percentage points
levels = scorer.score_levels[str(SIZE)]  # measured on real frames when the scorer was trained
in_cosine = MEANINGFUL_DIFFERENCE * (levels["ceiling"] - levels["floor"])
smallest = {"own": in_cosine, "bleed": in_cosine, "swap_rate": MEANINGFUL_DIFFERENCE}
scene_values = {mode: per_scene(sim) for mode, sim in sims.items()}
print(f"{NUM_SCENES} scenes; smallest differences that matter: {smallest['own']:.3f} cosine, "
      f"{smallest['swap_rate']:.0%} swap rate")
for a, b, key in [("concat", "none", "own"), ("routed", "concat", "bleed"), ("routed", "concat", "swap_rate")]:
    d, se = mean_and_se(scene_values[a][key] - scene_values[b][key])
    print(describe_effect(f"{key}: {a} - {b}", d, se, smallest=smallest[key]))

# %% [markdown]
# **Question.** Routing removes other characters' tokens from a region's identity attention, but the region's
# pixels still talk to the other face through spatial and temporal attention. What would you add to training
# (data, a loss, the separator tokens) so that the *pixels* stop bleeding too, and how would you measure that
# the fix works on scenes with four characters?
