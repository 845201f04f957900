"""The DriftLab's views, drawn off-screen: PNG/GIF bytes for ``widgets.Image`` and HTML for the readouts.

Figures are matplotlib ``Figure`` objects (no pyplot, no backend switch), safe to draw from the lab's worker
thread. :func:`figures_html` puts every headline number in an element with a fixed id (``driftlab-mean`` ...)
that the browser test reads. :func:`readme_figure` draws the README's picture of the lab.
"""

from __future__ import annotations

import html
import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from labkit.common import image_strip
from labkit.drift import STRATEGIES, STRATEGY_LABELS, DriftResult, DriftSettings, get_engine

__all__ = ["curve_png", "projection_png", "strip_png", "gif", "figures_html", "readme_figure"]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def curve_png(result: DriftResult, width: float = 5.0, height: float = 2.8) -> bytes:
    """Per-frame identity score with the ceiling (1) and floor (0) drawn and cuts marked, as PNG; the y axis
    is fixed, so a small difference looks small."""
    fig = Figure(figsize=(width, height))
    ax = fig.add_subplot()
    y = np.asarray(result.normalised, dtype=float)
    ax.axhspan(-0.5, 0.0, color="0.92")
    ax.axhline(1.0, color="tab:green", lw=1, ls="--", label="ceiling (real frames)")
    ax.axhline(0.0, color="tab:red", lw=1, ls="--", label="floor (strangers)")
    for i, c in enumerate(result.cuts):
        ax.axvline(c - 0.5, color="0.5", lw=0.8, ls=":", label="cut / new chunk" if i == 0 else None)
    ax.plot(np.arange(len(y)), y, "o-", ms=3, color="tab:blue", label="generated")
    ax.set_ylim(-0.3, 1.3)
    ax.set_xlabel("frame")
    ax.set_ylabel("identity score")
    s = result.settings
    ax.set_title(f"{s.strategy}, strength {s.identity_strength:g}, {s.num_references} refs", fontsize=9)
    ax.legend(fontsize=6, loc="lower left", ncol=2)
    fig.tight_layout()
    return _png(fig)


def projection_png(result: DriftResult, width: float = 3.4, height: float = 2.8) -> bytes:
    """2-D projection of frame embeddings (coloured by time) around the reference cluster, as PNG."""
    fig = Figure(figsize=(width, height))
    ax = fig.add_subplot()
    if len(result.others_xy):
        ax.scatter(*np.asarray(result.others_xy).T, s=10, c="0.75", label="other identities")
    xy = np.asarray(result.frame_xy)
    ax.plot(*xy.T, "-", color="0.6", lw=0.6)
    points = ax.scatter(*xy.T, s=14, c=np.arange(len(xy)), cmap="viridis", label="frames (time)")
    ax.scatter(*np.asarray(result.reference_xy).T, s=70, marker="*", c="tab:red", label="references")
    fig.colorbar(points, ax=ax, label="frame", fraction=0.05)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("recognizer embeddings (PCA)", fontsize=9)
    ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    return _png(fig)


def strip_png(images: np.ndarray, scale: int = 3) -> bytes:
    images = np.asarray(images)
    strip = np.concatenate(list(images), axis=1) if len(images) else np.zeros((8, 8, 3), np.uint8)
    img = Image.fromarray(strip).resize((strip.shape[1] * scale, strip.shape[0] * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def gif(frames: np.ndarray, fps: int = 6, scale: int = 4) -> bytes:
    pics = [Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST) for f in frames]
    buf = io.BytesIO()
    pics[0].save(buf, format="GIF", save_all=True, append_images=pics[1:], duration=int(1000 / fps), loop=0)
    return buf.getvalue()


_FIGURE_LABELS = {
    "mean": "mean identity score",
    "face_quality": "face quality (share of frames that are faces)",
    "first_chunk": "first chunk",
    "last_chunk": "last chunk",
    "drift": "drift (first - last chunk)",
    "variety": "variety (mean pixel change within a shot)",
}


def figures_html(result: DriftResult, source: str, seconds: float) -> str:
    """The headline figures as HTML; each value sits in an element with a stable id for the browser test."""
    rows = []
    for key, label in _FIGURE_LABELS.items():
        value = result.figures.get(key)
        if value is None:
            continue
        text = f"{100 * value:.0f}%" if key == "face_quality" else f"{value:.3f}"
        rows.append(f"<tr><td>{label}</td><td><b id='driftlab-{key.replace('_', '-')}'>{text}</b></td></tr>")
    s = result.settings
    setting = html.escape(f"{s.strategy} | strength {s.identity_strength:g} | {s.num_references} refs "
                          f"({s.reference_quality}) | {s.num_chunks} chunks | seed {s.seed} | id {s.identity}")
    return (f"<div id='driftlab-figures'><div id='driftlab-setting' style='font-size:90%'>{setting}</div>"
            f"<table>{''.join(rows)}</table>"
            f"<div id='driftlab-source' style='font-size:85%;color:#555'>{source} in {seconds:.2f} s</div></div>")


def readme_figure(out, model_path=None, identities: int = 4, num_chunks: int = 3, steps: int | None = None):
    """One PNG for the README: what the lab shows for its default setting (references, generated frames, the
    identity curve) beside the drift benchmark in small, the mean identity of each chunk for the four strategies
    on ``identities`` held-out identities (error bars: standard error). About a minute on a CPU."""
    engine = get_engine(model_path)
    shown = engine.run(DriftSettings(num_chunks=num_chunks), steps=steps)[0]
    per_chunk = {k: np.array([r.extra["per_chunk"] for r in engine.run(
        DriftSettings(strategy=k, num_chunks=num_chunks), identities=range(identities), steps=steps)])
        for k in STRATEGIES}

    def chw(images):  # uint8 (N, H, W, 3) -> what image_strip takes, (N, 3, H, W) in [-1, 1]
        return np.asarray(images, np.float32).transpose(0, 3, 1, 2) / 127.5 - 1

    fig = Figure(figsize=(12, 7.2))
    grid = fig.add_gridspec(2, 3, width_ratios=[1, 3, 3], height_ratios=[1, 1.6])
    for spec, image, title in [
            (grid[0, 0], image_strip(chw(shown.references), ncols=1), "references"),
            (grid[0, 1:], image_strip(chw(shown.frames), ncols=-(-len(shown.frames) // 2)),
             f"generated video ({num_chunks} chunks, dotted line in the curve: a new chunk)"),
            (grid[1, :2], np.asarray(Image.open(io.BytesIO(curve_png(shown, width=6, height=3.4)))),
             "the DriftLab's identity curve")]:
        ax = fig.add_subplot(spec)
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    ax = fig.add_subplot(grid[1, 2])
    chunks = np.arange(1, num_chunks + 1)
    for k, values in per_chunk.items():
        se = values.std(0, ddof=1) / np.sqrt(len(values)) if len(values) > 1 else np.zeros(values.shape[1])
        ax.errorbar(chunks[:values.shape[1]], values.mean(0), se, fmt="o-", ms=4, capsize=3, label=STRATEGY_LABELS[k])
    ax.axhline(1, color="tab:green", ls="--", lw=1, label="ceiling (real frames)")
    ax.axhline(0, color="tab:red", ls="--", lw=1, label="floor (strangers)")
    ax.set(xlabel="chunk", ylabel="identity score (mean of the chunk)", xticks=chunks, ylim=(-0.3, 1.5),
           title=f"four strategies, {identities} held-out identities")
    ax.legend(fontsize=7, loc="upper center", ncol=3)
    fig.suptitle("Character Consistency Lab: the DriftLab and the drift benchmark", fontsize=12)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out

