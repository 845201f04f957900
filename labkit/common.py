"""What every notebook needs at the top: the device, seeding, quick mode, and showing frames.

Quick mode (``LABKIT_QUICK=1``) makes every notebook and benchmark do less work (fewer training steps,
fewer identities, smaller sweeps) so that CI can run the whole course on a 2-core CPU. The notebooks
read :data:`QUICK` and scale their work with it.
"""

from __future__ import annotations

import importlib.metadata as md
import io
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

#: The one place the repository URL is written. The Colab setup cell of each notebook installs from it.
REPO_URL = "https://github.com/character-consistency-lab/labkit"

#: True when the environment variable LABKIT_QUICK is set to 1/true/yes: every notebook does less work.
QUICK = os.environ.get("LABKIT_QUICK", "0").strip().lower() in {"1", "true", "yes", "on"}


def get_device(prefer: str | None = None):
    """The best device here: CUDA, then Apple's MPS, then the CPU. ``prefer`` forces one (e.g. "cpu")."""
    if prefer is not None:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (all devices) so that a notebook gives the same figures twice."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def use_one_cpu_thread(device=None) -> int:
    """On a CPU, make torch use one thread in this process; returns the number of threads now.

    The course's models are small, so a second thread gains little even on an idle 2-core CPU, and when
    anything else runs (another notebook, a training, the DriftLab's worker) two threads that fight for two
    cores made sampling five to eight times slower in our measurements (3.5 s against 33-54 s for the same
    two chunks of eight videos). One thread keeps a notebook's time steady. On a GPU nothing changes.
    Notebook 08 trains on this one thread too (``labkit.train`` leaves a single process's threads alone).
    """
    if device is None or torch.device(device).type == "cpu":
        torch.set_num_threads(1)
    return torch.get_num_threads()


def data_path(name: str = "") -> Path:
    """Path of a file shipped in the kit's data/ folder (recognizer weights, the video checkpoint, sweeps).

    In a git checkout or an editable install this is the repository's ``data/``; in a wheel it is the
    ``labkit.data`` package that pyproject.toml maps onto the same folder.
    """
    repo_data = Path(__file__).resolve().parent.parent / "data"
    if repo_data.is_dir():
        return repo_data / name
    # labkit.data has no __init__.py: importlib.resources.files() gives a MultiplexedPath whose str() is not a
    # path, so take the namespace package's folder itself (tests/test_colab_setup.py installs a wheel to check).
    import labkit.data

    return Path(next(iter(labkit.data.__path__))) / name


def figure_path(name: str) -> Path:
    """Where a notebook or benchmark saves a figure: outputs/figures/<name> (git ignores outputs/)."""
    root = Path(os.environ.get("LABKIT_OUTPUTS", Path(__file__).resolve().parent.parent / "outputs"))
    path = root / "figures" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def to_uint8(x) -> np.ndarray:
    """Images in [-1, 1] with layout (..., 3, H, W) (torch or numpy) -> uint8 array (..., H, W, 3)."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 3 or x.shape[-3] != 3:
        raise ValueError(f"expected images with layout (..., 3, H, W), got shape {tuple(x.shape)}")
    x = np.moveaxis(x, -3, -1)
    return np.clip((x + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def has_ffmpeg() -> bool:
    """mediapy writes videos through the ffmpeg program; without it we fall back to Pillow."""
    return shutil.which("ffmpeg") is not None


def gif_bytes(frames, fps: int = 8, scale: int = 2) -> bytes:
    """Encode frames (F, 3, H, W) in [-1, 1] as an animated GIF with Pillow (no ffmpeg needed)."""
    arr = to_uint8(frames)
    images = [Image.fromarray(a).resize((a.shape[1] * scale, a.shape[0] * scale), Image.NEAREST) for a in arr]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return buf.getvalue()


#: Videos are shown at least this many screen pixels high: a 32x32 clip at its own size is a postage stamp.
VIDEO_DISPLAY_PIXELS = 256


def display_scale(height: int, pixels: int = VIDEO_DISPLAY_PIXELS) -> int:
    """The whole-number upscale (nearest neighbour, so pixels stay sharp) that shows ``height`` rows at
    ``pixels`` or more: 8 for 32x32 frames, 4 for 64x64."""
    return max(1, -(-pixels // max(int(height), 1)))


def show_video(frames, fps: int = 8, title: str | None = None, scale: int | None = None):
    """Show a clip (F, 3, H, W) in [-1, 1] in a notebook.

    Uses mediapy (an MP4 through ffmpeg). Without ffmpeg it shows an animated GIF made by Pillow and
    says so in one line, so the frames are always visible. ``scale`` (default: :func:`display_scale`, at
    least 256 screen pixels high) enlarges every pixel to a scale x scale block.
    """
    # IPython and mediapy only where a video is shown (a notebook); mediapy only once ffmpeg is found.
    from IPython.display import Image as IPImage
    from IPython.display import display

    arr = to_uint8(frames)
    scale = display_scale(arr.shape[1]) if scale is None else scale
    if has_ffmpeg():
        import mediapy

        big = arr.repeat(scale, axis=1).repeat(scale, axis=2)
        mediapy.show_video(big, fps=fps, title=title)
        return
    print("ffmpeg not found: showing an animated GIF made by Pillow instead of an MP4.")
    if title:
        print(title)
    display(IPImage(data=gif_bytes(frames, fps=fps, scale=scale), format="gif"))


def save_video(frames, path, fps: int = 8, scale: int = 2) -> Path:
    """Write a clip (F, 3, H, W) in [-1, 1] to ``path``: MP4 with mediapy and ffmpeg, else a GIF.

    Returns the path written (its suffix is .gif when the fallback was used).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if has_ffmpeg() and path.suffix.lower() == ".mp4":
        import mediapy

        arr = to_uint8(frames)
        mediapy.write_video(path, arr.repeat(scale, axis=1).repeat(scale, axis=2), fps=fps)
        return path
    path = path.with_suffix(".gif")
    path.write_bytes(gif_bytes(frames, fps=fps, scale=scale))
    return path


def image_strip(frames, ncols: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile images (N, 3, H, W) in [-1, 1] into one uint8 picture (rows x cols), white padding between."""
    arr = to_uint8(frames)
    n, h, w, _ = arr.shape
    ncols = ncols or n
    nrows = (n + ncols - 1) // ncols
    out = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, ncols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = arr[i]
    return out


def show_images(images, titles=None, ncols: int | None = None, size: float = 1.6, suptitle: str | None = None):
    """Plot images (N, 3, H, W) in [-1, 1] in a grid with optional titles; returns the matplotlib figure."""
    import matplotlib.pyplot as plt  # here, not at the top: pyplot picks a backend when first imported

    arr = to_uint8(images)
    n = len(arr)
    ncols = ncols or min(n, 8)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(arr[i])
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def environment_report() -> dict:
    """What the kit found on this machine: versions, device, ffmpeg, quick mode. Used by 00_welcome."""
    report = {}
    for pkg in ["torch", "torchvision", "diffusers", "facenet-pytorch", "einops", "mediapy", "ipywidgets"]:
        try:
            report[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            report[pkg] = "MISSING"
    report["device"] = str(get_device())
    report["ffmpeg"] = shutil.which("ffmpeg") or "not found (videos fall back to GIF)"
    report["quick mode"] = QUICK
    return report
