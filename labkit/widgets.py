"""The drift lab: move sliders, watch a character's identity hold or drift, in one notebook cell.

:class:`DriftLab` is an ipywidgets app. Its controls form a :class:`DriftSettings`; a compute function
``(settings, progress) -> DriftResult`` turns one setting into a generated video and its measurements. The
app stays responsive on a 2-core CPU because of three pieces that are independent of the model:

* :class:`ResultCache`: a setting already computed (in this session, or shipped in a precomputed sweep in
  ``data/``) comes back at once;
* :class:`LatestWorker`: one background thread computes only the most recently requested setting. A newer
  request makes the running computation stop at its next progress checkpoint (:class:`Cancelled`), and a
  result that finishes after the settings changed is cached but never shown (it is *stale*);
* :func:`validate_settings`: bad input (a zero or negative number of references typed in, an identity out
  of range, an unknown strategy) becomes a visible message, never a traceback.

Views are plain ``widgets.Image`` (PNG/GIF bytes drawn off-screen with matplotlib's ``Figure``, which is safe
to use from a thread) and ``widgets.HTML`` readouts with fixed element ids (``driftlab-mean`` ...) that the
browser test reads. The real compute function, :func:`compute_drift`, runs the shipped
``ReferenceConditionedGenerator`` and :mod:`labkit.metrics` (the end of this file).
``python -m labkit.widgets precompute`` rebuilds the shipped sweep; ``... readme-figure`` draws the README picture.
"""

from __future__ import annotations

import dataclasses
import html
import io
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "STRATEGIES", "REFERENCE_QUALITIES", "NUM_HELDOUT", "DriftSettings", "DriftResult", "Cancelled", "LabUnavailable",
    "validate_settings", "ResultCache", "LatestWorker", "DriftLab", "curve_png", "projection_png",
]

#: The four consistency strategies, named as ``labkit.pipeline.STRATEGIES`` (not imported: it pulls diffusers).
STRATEGIES = ("implicit", "keyframe", "explicit", "face_aware")
#: What each strategy mirrors, for labels (the seed article's comparison table).
STRATEGY_LABELS = {"implicit": "implicit (Sora 2)", "keyframe": "keyframe (Veo 3)",
                   "explicit": "explicit (Gen-4.5)", "face_aware": "face-aware (Kling 1.6)"}
#: Reference degradations: name -> (Gaussian noise std in [-1, 1] units, Gaussian blur sigma in pixels).
REFERENCE_QUALITIES = {"clean": (0.0, 0.0), "noisy": (0.25, 0.0), "very noisy": (0.5, 0.0),
                       "blurred": (0.0, 1.0), "very blurred": (0.0, 2.0)}
#: Held-out identities the lab offers: index i means ``synthfaces.test_ids(NUM_HELDOUT)[i]``.
NUM_HELDOUT = 20
MAX_REFERENCES = 5
MAX_CHUNKS = 6
#: The identity_strength range of the lab (its slider's ends).
MIN_STRENGTH, MAX_STRENGTH = 0.0, 1.5


@dataclass(frozen=True)
class DriftSettings:
    """One point of the lab: everything that determines a generated video and its measurements."""

    identity_strength: float = 0.8
    num_references: int = 3
    reference_quality: str = "clean"
    strategy: str = "face_aware"
    num_chunks: int = 2
    seed: int = 0
    identity: int = 0

    def key(self) -> tuple:
        """Hashable cache key; the strength is rounded so 0.8 and 0.8000001 share one entry."""
        return (round(float(self.identity_strength), 3), int(self.num_references), self.reference_quality,
                self.strategy, int(self.num_chunks), int(self.seed), int(self.identity))

    def replace(self, **changes) -> DriftSettings:
        return dataclasses.replace(self, **changes)


@dataclass
class DriftResult:
    """What one setting produced. Arrays are small numpy so results cache and ship cheaply.

    frames (F, H, W, 3) uint8; references (R, H, W, 3) uint8; normalised (F,) per-frame normalised identity
    (1 = ceiling, 0 = floor); cuts: frame indices where a new shot or chunk starts; frame_xy (F, 2),
    reference_xy (R, 2), others_xy (K, 2): 2-D projection of recognizer embeddings of the frames, the
    references and a few other identities; figures: the headline numbers by name.
    """

    settings: DriftSettings
    frames: np.ndarray
    references: np.ndarray
    normalised: np.ndarray
    cuts: list
    frame_xy: np.ndarray
    reference_xy: np.ndarray
    others_xy: np.ndarray
    figures: dict
    ceiling: float = 1.0
    floor: float = 0.0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


class Cancelled(Exception):
    """Raised inside a computation by its progress callback when a newer setting has been requested."""


class LabUnavailable(RuntimeError):
    """Raised by a compute function that cannot run at all (no trained video model yet). The lab shows its
    message as it is, in place of a result, and tries again on the next request."""


def validate_settings(settings: DriftSettings) -> tuple[DriftSettings | None, list[str]]:
    """Check a setting. Returns (settings to compute, messages); settings is None when it cannot run.

    Out-of-range numbers the learner *typed* (identity_strength included: the lab's strength box takes any
    number) are refused with a message saying the allowed range; nothing is clipped silently.
    """
    messages = []
    try:
        strength = float(settings.identity_strength)
        refs, chunks = int(settings.num_references), int(settings.num_chunks)
        seed, ident = int(settings.seed), int(settings.identity)
    except (TypeError, ValueError, OverflowError) as err:
        return None, [f"settings must be numbers: {err}"]
    if not isinstance(settings.strategy, str) or not isinstance(settings.reference_quality, str):
        return None, [f"strategy and reference quality must be names, got {settings.strategy!r} and "
                      f"{settings.reference_quality!r}"]
    if not np.isfinite(strength):
        return None, [f"identity_strength must be a number in {MIN_STRENGTH:g}..{MAX_STRENGTH:g}, got {strength}"]
    errors = []
    if not MIN_STRENGTH <= strength <= MAX_STRENGTH:
        errors.append(f"identity_strength must be {MIN_STRENGTH:g}..{MAX_STRENGTH:g}, got {strength:g}")
    if not 1 <= refs <= MAX_REFERENCES:
        errors.append(f"number of references must be 1..{MAX_REFERENCES}, got {refs}")
    if not 0 <= ident < NUM_HELDOUT:
        errors.append(f"held-out identity must be 0..{NUM_HELDOUT - 1}, got {ident}")
    if not 1 <= chunks <= MAX_CHUNKS:
        errors.append(f"video length must be 1..{MAX_CHUNKS} chunks, got {chunks}")
    if seed < 0:
        errors.append(f"seed must be 0 or more, got {seed}")
    if settings.strategy not in STRATEGIES:
        errors.append(f"strategy must be one of {', '.join(STRATEGIES)}, got {settings.strategy!r}")
    if settings.reference_quality not in REFERENCE_QUALITIES:
        errors.append(f"reference quality must be one of {', '.join(REFERENCE_QUALITIES)}, "
                      f"got {settings.reference_quality!r}")
    if errors:
        return None, errors + messages
    clean = DriftSettings(round(strength, 3), refs, settings.reference_quality, settings.strategy, chunks,
                          seed, ident)
    return clean, messages


class ResultCache:
    """Least-recently-used store of results by ``DriftSettings.key()``; thread-safe. Remembers each source."""

    def __init__(self, max_items: int = 128):
        self.max_items = max_items
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, settings: DriftSettings):
        """(result, source) or (None, None); ``source`` is "computed" or "precomputed"."""
        with self._lock:
            item = self._items.get(settings.key())
            if item is None:
                return None, None
            self._items.move_to_end(settings.key())
            return item

    def put(self, result: DriftResult, source: str = "computed") -> None:
        with self._lock:
            self._items[result.settings.key()] = (result, source)
            self._items.move_to_end(result.settings.key())
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def items(self) -> list:
        """A snapshot of every (result, source) held, least recently used first."""
        with self._lock:
            return list(self._items.values())

    def __contains__(self, settings: DriftSettings) -> bool:
        with self._lock:
            return settings.key() in self._items

    def __len__(self) -> int:
        return len(self._items)


class LatestWorker:
    """One background thread that computes the most recently requested setting, and only that.

    ``request(settings)`` answers from the cache at once when it can; otherwise it records the setting as
    the latest wish and wakes the thread. The thread calls ``compute(settings, progress)``; ``progress``
    reports a fraction and raises :class:`Cancelled` as soon as a newer request exists, so a slider moved
    again abandons the old work at its next checkpoint. A result that completes for a superseded request is
    cached (it may be asked for again) but dropped, never shown. Callbacks run on the worker thread:
    ``on_result(result, source, seconds)``, ``on_progress(fraction, message)``, ``on_error(message)``.
    ``idle()``, if given, is called whenever nothing is pending: it does one small piece of background work and
    returns whether more is left (the lab draws the views of the precomputed sweep this way).
    """

    def __init__(self, compute, on_result, on_progress=None, on_error=None, cache: ResultCache | None = None,
                 idle=None):
        self.compute = compute
        self.idle = idle
        self._idle_left = idle is not None
        self.on_result, self.on_progress, self.on_error = on_result, on_progress, on_error
        self.cache = cache if cache is not None else ResultCache()
        self._cond = threading.Condition()
        self._generation = 0        # bumped by every request: a computation of an older one is stale
        self._pending = None        # (generation, settings, requested_at) waiting for the thread
        self._busy = False
        self._closed = False
        self._deliver_lock = threading.Lock()   # a stale result can't overtake a newer one on its way out
        self.stats = {"computed": 0, "cancelled": 0, "dropped": 0, "cache_hits": 0, "errors": 0}
        self._thread = threading.Thread(target=self._loop, name="DriftLabWorker", daemon=True)
        self._thread.start()

    def request(self, settings: DriftSettings) -> str:
        """Ask for ``settings``. Returns "cache" if answered at once, else "queued"."""
        requested_at = time.perf_counter()
        with self._cond:
            self._generation += 1
            generation = self._generation
            result, source = self.cache.get(settings)
            if result is None:
                self._pending = (generation, settings, requested_at)
                self._cond.notify_all()
                return "queued"
            self._pending = None
            self.stats["cache_hits"] += 1
        self._deliver(generation, result, "cache" if source == "computed" else source,
                      time.perf_counter() - requested_at)
        return "cache"

    def is_current(self, generation: int) -> bool:
        return generation == self._generation and not self._closed

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until nothing is pending or running (tests and notebooks use it). False on timeout."""
        deadline = time.perf_counter() + timeout
        with self._cond:
            while self._pending is not None or self._busy:
                left = deadline - time.perf_counter()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._generation += 1
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _deliver(self, generation, result, source, seconds) -> bool:
        with self._deliver_lock:
            if not self.is_current(generation):
                self.stats["dropped"] += 1
                return False
            try:
                self.on_result(result, source, seconds)
            except Exception as err:  # a view that fails to draw must not kill the worker
                self._error(f"could not show the result: {type(err).__name__}: {err}")
            return True

    def _error(self, message):
        self.stats["errors"] += 1
        if self.on_error is not None:
            self.on_error(message)

    def _loop(self):
        warm_up = getattr(self.compute, "warm_up", None)
        if warm_up is not None:  # load the model now, so the first new setting doesn't pay for it
            with self._cond:
                self._busy = True
            try:
                warm_up()
            except Exception as err:
                self._error(_describe(err, "could not load the generator"))
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
        while True:
            with self._cond:
                while self._pending is None and not self._closed and not self._idle_left:
                    self._cond.wait()
                if self._closed:
                    return
                if self._pending is None:  # nothing asked for: one piece of background work, then look again
                    idle_now = True
                else:
                    idle_now = False
                    generation, settings, requested_at = self._pending
                    self._pending = None
                    self._busy = True
            if idle_now:
                try:
                    self._idle_left = bool(self.idle())
                except Exception:  # noqa: BLE001 - background work is optional; never let it stop the worker
                    self._idle_left = False
                continue

            def progress(fraction, message="", _generation=generation):
                if not self.is_current(_generation):
                    raise Cancelled
                if self.on_progress is not None:
                    self.on_progress(float(fraction), message)

            try:
                progress(0.0, "starting")
                result = self.compute(settings, progress)
                self.stats["computed"] += 1
                self.cache.put(result, "computed")
                self._deliver(generation, result, "computed", time.perf_counter() - requested_at)
            except Cancelled:
                self.stats["cancelled"] += 1
            except Exception as err:  # shown in the app as a message; the worker keeps serving
                if self.is_current(generation):
                    self._error(_describe(err, "generation failed"))
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


def _describe(err: Exception, what: str) -> str:
    """The message the app shows for an exception: a LabUnavailable speaks for itself."""
    if isinstance(err, LabUnavailable):
        return str(err)
    return f"{what}: {type(err).__name__}: {err}"


# ----------------------------------------------------------------------------------------------- views
def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def curve_png(result: DriftResult, width: float = 5.0, height: float = 2.8) -> bytes:
    """Per-frame identity score with the ceiling (1) and floor (0) drawn and cuts marked, as PNG; the y axis
    is fixed, so a small difference looks small."""
    from matplotlib.figure import Figure

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
    from matplotlib.figure import Figure

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


def _strip_png(images: np.ndarray, scale: int = 3) -> bytes:
    from PIL import Image

    images = np.asarray(images)
    strip = np.concatenate(list(images), axis=1) if len(images) else np.zeros((8, 8, 3), np.uint8)
    img = Image.fromarray(strip).resize((strip.shape[1] * scale, strip.shape[0] * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _gif(frames: np.ndarray, fps: int = 6, scale: int = 4) -> bytes:
    from PIL import Image

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


# ------------------------------------------------------------------------------------------------- app
#: Precomputed results whose views the worker draws before it loads the model (the rest follow when idle):
#: 14 covers every setting one move away from the first (strength +-0.1 or +-0.2, or another strategy +-0.1).
PREDRAW_FIRST = 14
#: In that order, another strategy counts as far as this much identity_strength.
_STRATEGY_DISTANCE = 0.15


class DriftLab:
    """The interactive drift lab. ``DriftLab().show()`` (or just ``DriftLab()`` as a cell's last line).

    ``compute(settings, progress) -> DriftResult`` defaults to :func:`compute_drift` (the
    real generator and metrics on the shipped model, or on ``model_path``); tests pass a small fake.
    ``precomputed=True`` preloads the shipped sweep when it was made with the model in use. Without a
    trained model the lab shows a message saying so (and how to get one) instead of a result.
    ``lab.set(identity_strength=0.5, strategy="keyframe")`` moves controls from code; ``lab.wait()`` blocks
    until the view shows the latest setting.
    """

    def __init__(self, compute=None, settings: DriftSettings | None = None, precomputed: bool = True,
                 cache: ResultCache | None = None, autostart: bool = True, model_path=None):
        import ipywidgets as W

        if compute is None:
            compute = compute_drift if model_path is None else make_compute(model_path)
        self.cache = cache if cache is not None else ResultCache()
        if precomputed and compute is not None and getattr(compute, "load_precomputed", None):
            compute.load_precomputed(self.cache)
        s = settings or DriftSettings()
        wide = {"description_width": "120px"}
        self.controls = {
            # No readout of its own: the front end would clamp a typed 5 to 1.5 without a word. The strength
            # box next to it takes any number; one out of range is refused with a message (_on_strength_box).
            "identity_strength": W.FloatSlider(value=s.identity_strength, min=MIN_STRENGTH, max=MAX_STRENGTH,
                                               step=0.05, description="identity_strength", readout=False,
                                               continuous_update=False, style=wide),
            "num_references": W.IntText(value=s.num_references, description="references (1-5)", style=wide),
            "reference_quality": W.Dropdown(options=list(REFERENCE_QUALITIES), value=s.reference_quality,
                                            description="reference quality", style=wide),
            "strategy": W.Dropdown(options=[(STRATEGY_LABELS[k], k) for k in STRATEGIES], value=s.strategy,
                                   description="strategy", style=wide),
            "num_chunks": W.IntSlider(value=s.num_chunks, min=1, max=MAX_CHUNKS, description="length (chunks)",
                                      continuous_update=False, style=wide),
            "seed": W.IntText(value=s.seed, description="seed", style=wide),
            "identity": W.IntText(value=s.identity, description=f"held-out id (0-{NUM_HELDOUT - 1})", style=wide),
        }
        img = {"layout": W.Layout(object_fit="contain")}
        self.references_view = W.Image(format="png", **img)
        self.video_view = W.Image(format="gif", **img)
        self.curve_view = W.Image(format="png", **img)
        self.projection_view = W.Image(format="png", **img)
        for name, view in [("references", self.references_view), ("video", self.video_view),
                           ("curve", self.curve_view), ("projection", self.projection_view)]:
            view.add_class(f"driftlab-{name}")
        self.figures_view = W.HTML("<div id='driftlab-figures'>waiting for the first result...</div>")
        self.status = W.HTML("<span id='driftlab-status'>ready</span>")
        self.message = W.HTML("<div id='driftlab-message'></div>")
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="", layout=W.Layout(width="200px"))
        self.shown: DriftResult | None = None
        self.history: list[tuple[str, float]] = []      # (source, seconds) of every update shown
        self._lock = threading.Lock()
        self._views: OrderedDict = OrderedDict()        # settings key -> (result, drawn views)
        self._views_lock = threading.Lock()
        self.worker = LatestWorker(self._drawing(compute), self._show, self._on_progress, self._on_error,
                                   self.cache, idle=self._predraw)
        self.strength_box = W.FloatText(value=s.identity_strength, step=0.05, description="",
                                        layout=W.Layout(width="70px"))
        self.strength_box.add_class("driftlab-strength-box")
        for w in self.controls.values():
            w.observe(self._on_change, names="value")
        self.controls["identity_strength"].observe(self._on_strength_slider, names="value")
        self.strength_box.observe(self._on_strength_box, names="value")
        strength_row = W.HBox([self.controls["identity_strength"], self.strength_box])
        left = W.VBox([strength_row] + [self.controls[k] for k in ("strategy", "num_references",
                                                                   "reference_quality")])
        right = W.VBox([self.controls[k] for k in ("num_chunks", "seed", "identity")]
                       + [W.HBox([self.progress, self.status])])
        refs = W.VBox([W.HTML("<b>references</b>"), self.references_view])
        video = W.VBox([W.HTML("<b>generated video</b>"), self.video_view])
        figures = W.VBox([W.HTML("<b>headline figures</b>"), self.figures_view])
        self.widget = W.VBox([W.HBox([left, right]), self.message, W.HBox([refs, video, figures]),
                              W.HBox([self.curve_view, self.projection_view])])
        self.widget.add_class("driftlab")
        if autostart:
            self.request()

    # controls -> settings
    def settings(self) -> DriftSettings:
        """The setting the controls show now (not yet validated)."""
        return DriftSettings(**{k: w.value for k, w in self.controls.items()})

    def set(self, **values) -> None:
        """Move several controls at once from code; computes once, for the final combination.

        An identity_strength outside 0..1.5 is refused like one typed into the strength box: a message, and
        the slider stays where it was (a slider would clamp it silently)."""
        unknown = set(values) - set(self.controls)
        if unknown:
            raise TypeError(f"unknown DriftLab controls {sorted(unknown)}; known: {sorted(self.controls)}")
        strength = values.get("identity_strength")
        refuse = strength is not None and _out_of_strength_range(strength)
        if refuse:
            values = {k: v for k, v in values.items() if k != "identity_strength"}
        self._batch = True
        try:
            for k, v in values.items():
                try:
                    self.controls[k].value = v
                except Exception as err:  # noqa: BLE001 - traitlets' TraitError: the widget refuses the value
                    raise ValueError(f"DriftLab control {k} cannot take {v!r}: {str(err).splitlines()[0]}") from None
        finally:
            self._batch = False
        if refuse:
            self._refuse_strength(strength)
        else:
            self.request()

    _batch = False

    def _on_change(self, change):
        if not self._batch:
            self.request()

    def _on_strength_slider(self, change):
        """The box follows the slider."""
        if self.strength_box.value != change["new"]:
            self.strength_box.value = change["new"]

    def _on_strength_box(self, change):
        """A number typed into the strength box moves the slider; one out of range is refused, visibly."""
        value, slider = change["new"], self.controls["identity_strength"]
        if _out_of_strength_range(value):
            self._refuse_strength(value)
        elif slider.value != value:
            slider.value = value  # the slider's observer asks for the new setting
        elif not self._batch and "identity_strength must" in self.message.value:
            self.request()  # typed back in range at the slider's value: clear the message

    def _refuse_strength(self, value) -> None:
        slider = self.controls["identity_strength"]
        self.request(self.settings().replace(identity_strength=value))  # invalid: shows the range, computes nothing
        self.message.value = self.message.value.replace(
            "</div>", html.escape(f" (the slider stays at {slider.value:g})") + "</div>", 1)

    def request(self, settings: DriftSettings | None = None) -> str:
        """Validate and ask the worker for a setting. Returns "cache", "queued" or "invalid"."""
        settings, messages = validate_settings(settings or self.settings())
        self._set_message(messages, error=settings is None)
        if settings is None:
            self.status.value = "<span id='driftlab-status'>not computed: fix the input</span>"
            return "invalid"
        self.status.value = "<span id='driftlab-status'>generating...</span>"
        self.progress.value = 0.0
        return self.worker.request(settings)

    def wait(self, timeout: float = 120.0) -> DriftResult | None:
        """Block until the latest request is shown (or failed); returns what the view shows."""
        self.worker.wait_idle(timeout)
        return self.shown

    def close(self) -> None:
        self.worker.close()
        self.widget.close()

    # worker callbacks (worker thread or the kernel's thread; they only set widget traits)
    def _set_message(self, messages, error=False):
        color = "#b00020" if error else "#8a6d00"
        text = "<br>".join(html.escape(m) for m in messages)
        self.message.value = (f"<div id='driftlab-message' style='color:{color}'>{text}</div>" if messages
                              else "<div id='driftlab-message'></div>")

    def _on_progress(self, fraction, message):
        self.progress.value = min(max(fraction, 0.0), 1.0)
        self.status.value = f"<span id='driftlab-status'>generating {100 * fraction:.0f}% {html.escape(message)}</span>"

    def _on_error(self, message):
        self._set_message([message], error=True)
        self.status.value = "<span id='driftlab-status'>failed</span>"

    def views(self, result: DriftResult) -> dict:
        """The drawn views of a result (PNG/GIF bytes by view name), drawn once and kept as long as the cache
        would keep the result. Drawing takes about half a second of CPU; a cached setting must not pay it."""
        key = result.settings.key()
        with self._views_lock:
            kept = self._views.get(key)
            if kept is not None and kept[0] is result:
                self._views.move_to_end(key)
                return kept[1]
        drawn = {"references": _strip_png(result.references), "video": _gif(result.frames),
                 "curve": curve_png(result), "projection": projection_png(result)}
        with self._views_lock:
            self._views[key] = (result, drawn)
            while len(self._views) > self.cache.max_items:
                self._views.popitem(last=False)
        return drawn

    def _predraw(self) -> bool:
        """Draw the views of the precomputed result nearest the current setting that has none yet (nearest
        strength first; another strategy counts as 0.15 of strength). False when every one has its views."""
        with self._views_lock:
            drawn = set(self._views)
        todo = [r for r, source in self.cache.items() if source == "precomputed" and r.settings.key() not in drawn]
        if not todo:
            return False
        now = self.settings()
        nearest = min(todo, key=lambda r: _STRATEGY_DISTANCE * (r.settings.strategy != now.strategy)
                      + abs(r.settings.identity_strength - float(now.identity_strength)))
        self.views(nearest)
        return len(todo) > 1

    def _drawing(self, compute):
        """``compute`` that also draws each new result's views on the worker thread, off the kernel's thread,
        and whose warm-up also pays matplotlib's first-figure cost (about a second) before any result."""

        def compute_and_draw(settings, progress):
            result = compute(settings, progress)
            self.views(result)
            return result

        def warm_up():
            try:
                for _ in range(PREDRAW_FIRST):  # the neighbours of the first setting, before the model loads
                    if not self._predraw():
                        break
                if getattr(compute, "warm_up", None) is not None:
                    compute.warm_up()
            finally:
                curve_png(DriftResult(DriftSettings(), np.zeros((2, 8, 8, 3), np.uint8), np.zeros((1, 8, 8, 3),
                          np.uint8), np.zeros(2), [1], np.zeros((2, 2)), np.zeros((1, 2)), np.zeros((0, 2)), {}))

        compute_and_draw.warm_up = warm_up
        return compute_and_draw

    def _show(self, result: DriftResult, source: str, seconds: float):
        views = self.views(result)
        with self._lock:
            self.references_view.value = views["references"]
            self.video_view.value = views["video"]
            self.curve_view.value = views["curve"]
            self.projection_view.value = views["projection"]
            self.figures_view.value = figures_html(result, source, seconds)
            self.progress.value = 1.0
            self.status.value = f"<span id='driftlab-status'>shown ({source})</span>"
            self.shown = result
            self.history.append((source, seconds))

    def show(self) -> None:
        _display(self.widget)

    def _ipython_display_(self):
        _display(self.widget)


def _out_of_strength_range(value) -> bool:
    """True for a number (NaN included) outside MIN_STRENGTH..MAX_STRENGTH; False for anything not a number,
    which the slider itself refuses with an error."""
    try:
        return not MIN_STRENGTH <= float(value) <= MAX_STRENGTH
    except (TypeError, ValueError, OverflowError):
        return False


def _display(widget) -> None:
    """Display a widget; on Colab first turn on the widget manager that ipywidgets 8 needs there."""
    import sys

    from IPython.display import display

    if "google.colab" in sys.modules:
        try:
            from google.colab import output

            output.enable_custom_widget_manager()
        except Exception:  # noqa: BLE001 - older Colab runtimes render ipywidgets without it
            pass
    display(widget)


# --------------------------------------------------------------------- the real computation behind the lab
#: Denoising steps per chunk in the lab (the precomputed sweep records it and is ignored if it differs).
INFERENCE_STEPS = 20
#: Given frames per continuation chunk (the previous chunk's last ones).
CONTEXT_FRAMES = 2
#: Clean renders of the identity that every video is *scored* against (fixed, whatever the settings).
SCORING_REFERENCES = 5
#: Shipped sweep: every strategy x identity_strength 0, 0.1, ..., 1.5 at the default other settings (64 videos,
#: about 3 MB). The slider's in-between positions (step 0.05) are computed live, in a couple of seconds.
SWEEP_FILE = "drift_sweep.npz"


def degrade(images, quality: str, seed: int = 0):
    """Apply a reference quality (a key of REFERENCE_QUALITIES) to images (N, 3, H, W) in [-1, 1]."""
    from labkit.bench import degrade as blur_and_noise

    noise, blur = REFERENCE_QUALITIES[quality]
    return blur_and_noise(images, noise, blur, seed=10_000 + seed)


def model_folder(model_path=None):
    """The video model folder the lab uses: ``model_path``, or the shipped ``data/identity_video_dit``."""
    from pathlib import Path

    from labkit.common import data_path

    return Path(model_path) if model_path is not None else data_path("identity_video_dit")


def model_fingerprint(model_path=None) -> str | None:
    """sha256 of the model's weights file (None if there is none): ties a precomputed sweep to its model."""
    import hashlib

    weights = model_folder(model_path) / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        return None
    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _threads:
    """Context manager: torch uses ``n`` CPU threads inside (None: unchanged). With OpenMP builds the setting
    belongs to the calling thread, so the lab's worker thread does not change the kernel's."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        import torch

        self.before = torch.get_num_threads()
        if self.n is not None:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.before)


class DriftEngine:
    """The shipped generator, the recognizer and the measured ceiling/floor, loaded once and shared.

    ``engine(settings, progress)`` generates the video for one :class:`DriftSettings` with
    ``ReferenceConditionedGenerator.generate`` and measures it with :mod:`labkit.metrics`. One generation
    runs at a time (a lock), so the lab's worker and a notebook cell can share the engine.
    ``model_path`` picks another IdentityVideoDiT folder than the shipped one; a missing model raises
    :class:`LabUnavailable` with what to do about it. ``num_threads`` (default 1) is the number of CPU threads
    a generation uses, set for the calling thread only: the model is so small that a second thread gains
    little on an idle CPU, and when anything else runs (the kernel, a training) two threads that fight for
    two cores made one generation ten times slower in our measurements. None leaves torch's setting alone.
    """

    def __init__(self, device=None, steps: int = INFERENCE_STEPS, model_path=None, num_threads: int | None = 1):
        folder = model_folder(model_path)
        if not (folder / "config.json").is_file():  # checked first: says so in a second, not after the imports
            raise LabUnavailable(
                f"No trained video model at {folder}, so the lab has nothing to generate with yet. Train one "
                "with notebook 08 (or `python -m labkit.train`) and save it there with model.save_pretrained, "
                "or point the lab at your own: DriftLab(model_path=...).")
        import torch

        from labkit.common import get_device
        from labkit.metrics import embed_frames
        from labkit.pipeline import ReferenceConditionedGenerator
        from labkit.synthfaces import test_ids

        self.model_path = folder
        self.num_threads = num_threads
        self.device = device or get_device()
        self.pipe = ReferenceConditionedGenerator.from_shipped(device=self.device, path=folder)
        self.recognizer = self.pipe.recognizer
        self.size = self.pipe.model.config.sample_size
        self.max_frames = self.pipe.model.config.max_frames
        self.steps = steps
        self.ids = test_ids(NUM_HELDOUT)
        self._embed = embed_frames
        self._identity_cache: dict = {}
        self._lock = threading.Lock()
        self._torch = torch

    def identity(self, index: int) -> dict:
        """Everything fixed for one held-out identity: references, layout, scoring embeddings, projection."""
        if index in self._identity_cache:
            return self._identity_cache[index]
        with _threads(self.num_threads):
            return self._make_identity(index)

    def _make_identity(self, index: int) -> dict:
        from labkit.metrics import reference_embedding
        from labkit.pipeline import frames_for_chunks
        from labkit.synthfaces import make_clip, make_clips

        torch = self._torch
        ident = int(self.ids[index])
        n = frames_for_chunks(MAX_CHUNKS, self.max_frames, CONTEXT_FRAMES)
        given = make_clip(ident, num_frames=n, size=self.size, num_refs=MAX_REFERENCES,
                          generator=torch.Generator().manual_seed(ident))
        scoring = make_clip(ident, num_frames=16, size=self.size, num_refs=SCORING_REFERENCES, num_cuts=3,
                            generator=torch.Generator().manual_seed(ident + 1))
        others = [i for i in range(NUM_HELDOUT) if i != index][:12]
        strangers = make_clips(self.ids[others], num_frames=1, size=self.size, num_refs=1,
                               generator=torch.Generator().manual_seed(7))
        ref_emb = self._embed(self.recognizer, scoring.references)                 # (R, 512)
        real_emb = self._embed(self.recognizer, scoring.frames)                    # (16, 512)
        other_emb = self._embed(self.recognizer, strangers.references[:, 0])       # (K, 512)
        # A fixed 2-D basis per identity (PCA of its real frames and the strangers) keeps the picture still
        # while the sliders move, so only the generated frames move in it.
        basis_points = torch.cat([real_emb, other_emb]).numpy()
        mean = basis_points.mean(0)
        _, _, vt = np.linalg.svd(basis_points - mean, full_matrices=False)
        item = {"references": given.references, "masks": given.masks, "ref_emb": ref_emb,
                "score_images": scoring.references,
                "ref_mean": reference_embedding(ref_emb[None]), "mean": mean, "basis": vt[:2].T,
                "others_xy": (other_emb.numpy() - mean) @ vt[:2].T, "identity": ident}
        self._identity_cache[index] = item
        return item

    def __call__(self, settings: DriftSettings, progress=None) -> DriftResult:
        """One video for one setting (what the lab shows)."""
        return self.run(settings, progress=progress)[0]

    def run(self, settings: DriftSettings, identities=None, progress=None, reanchor_every: int | None = None,
            steps: int | None = None) -> list[DriftResult]:
        """Videos of several held-out identities (indices; default ``settings.identity``) in one batch.

        The batch shares the setting; its noise is drawn for the whole batch, so a video made in a batch
        differs from the same setting made alone (both are fair samples). ``reanchor_every`` gives the
        keyframe again every n-th chunk, whatever the strategy.
        """
        start = time.perf_counter()
        identities = [settings.identity] if identities is None else list(identities)
        with _threads(self.num_threads):
            return self._run(settings, identities, progress, reanchor_every, steps, start)

    def _run(self, settings, identities, progress, reanchor_every, steps, start) -> list[DriftResult]:
        from labkit.common import to_uint8
        from labkit.metrics import identity_scores, variety
        from labkit.pipeline import frames_for_chunks

        torch = self._torch
        who = [self.identity(i) for i in identities]
        refs = torch.stack([degrade(w["references"][:settings.num_references], settings.reference_quality,
                                    settings.seed) for w in who])                  # (B, R, 3, S, S)
        num_frames = frames_for_chunks(settings.num_chunks, self.max_frames, CONTEXT_FRAMES)
        steps = steps or self.steps
        hook = _ProgressHook(settings.num_chunks * steps, progress)
        with self._lock:
            self.pipe.progress_bar = hook.start
            try:
                out = self.pipe.generate(reference_images=refs, num_frames=num_frames,
                                         identity_strength=settings.identity_strength, strategy=settings.strategy,
                                         generator=torch.Generator().manual_seed(settings.seed),
                                         num_inference_steps=steps,
                                         face_masks=torch.stack([w["masks"][:num_frames] for w in who]),
                                         context_frames=CONTEXT_FRAMES, reanchor_every=reanchor_every,
                                         check_faces=False, progress=True)
            finally:
                del self.pipe.progress_bar
        frames = out.frames.cpu()                                                   # (B, F, 3, S, S)
        scores, parts = identity_scores(frames, torch.stack([w["score_images"] for w in who]), self.recognizer,
                                        return_parts=True)
        emb = parts["embeddings"]                                                   # (B, F, 512)
        norm = scores.numpy()                                                       # (B, F)
        faces = parts["face_probability"].numpy()
        moving = variety(frames, out.cuts)
        seconds = (time.perf_counter() - start) / len(who)
        results = []
        for b, (index, w) in enumerate(zip(identities, who)):
            per_chunk = chunk_means(norm[b:b + 1], out.chunk_starts)[0].tolist()
            figures = {"mean": float(norm[b].mean()), "face_quality": float((faces[b] >= 0.5).mean()),
                       "first_chunk": per_chunk[0], "last_chunk": per_chunk[-1],
                       "drift": per_chunk[0] - per_chunk[-1], "variety": float(moving[b])}
            project = lambda e, w=w: (np.asarray(e, dtype=np.float64) - w["mean"]) @ w["basis"]
            results.append(DriftResult(
                settings=settings.replace(identity=index), frames=to_uint8(frames[b]), references=to_uint8(refs[b]),
                normalised=norm[b], cuts=torch.nonzero(out.cuts[b]).flatten().tolist(),
                frame_xy=project(emb[b].numpy()), reference_xy=project(w["ref_emb"].numpy()),
                others_xy=w["others_xy"], figures=figures, seconds=seconds,
                extra={"per_chunk": per_chunk, "chunk_starts": list(out.chunk_starts)}))
        return results


def chunk_means(scores, chunk_starts):
    """Mean score of each chunk: scores (B, F) (numpy or torch), chunk_starts (first frame of each chunk,
    increasing, starting at 0) -> (B, num_chunks) of the same kind. Empty chunks are left out."""
    bounds = list(chunk_starts) + [scores.shape[1]]
    means = [scores[:, a:b].mean(1) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    if isinstance(scores, np.ndarray):
        return np.stack(means, 1)
    import torch

    return torch.stack(means, 1)


class _ProgressHook:
    """Stands in for the pipeline's tqdm bar: every denoising step reports progress (and may cancel)."""

    def __init__(self, total, progress):
        self.total, self.done, self.progress = max(total, 1), 0, progress

    def start(self, iterable=None, total=None):
        """What the pipeline calls in place of ``progress_bar(total=...)``: it knows the true step count."""
        if total:
            self.total = total
        return self

    def update(self, n=1):
        self.done += n
        if self.progress is not None:
            self.progress(self.done / self.total, f"step {self.done}/{self.total}")

    def close(self):
        pass


_ENGINES: dict = {}
_ENGINE_LOCK = threading.Lock()


def get_engine(model_path=None) -> DriftEngine:
    """The session's :class:`DriftEngine` for a model folder (default: the shipped one), created on first use.

    Raises :class:`LabUnavailable` while the model is missing; a model that appears later is picked up.
    """
    key = str(model_folder(model_path))
    with _ENGINE_LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = DriftEngine(model_path=model_path)
        return _ENGINES[key]


def make_compute(model_path=None):
    """The lab's compute function ``(settings, progress) -> DriftResult`` on a model folder (default: shipped).

    It carries ``warm_up`` (loads the model on the lab's worker thread before the first request arrives) and
    ``load_precomputed`` (fills a cache with the shipped sweep, only if the sweep was made with this model).
    """

    def compute(settings: DriftSettings, progress=None) -> DriftResult:
        return get_engine(model_path)(settings, progress)

    compute.warm_up = lambda: get_engine(model_path).identity(DriftSettings().identity)
    compute.load_precomputed = lambda cache, path=None: load_precomputed(cache, path, model_path=model_path)
    return compute


#: The lab's default compute function: the real generator and metrics on the shipped model.
compute_drift = make_compute()


# ----------------------------------------------------------------------------- precomputed sweep in data/
_ARRAYS = ("frames", "references", "normalised", "frame_xy", "reference_xy", "others_xy")


def save_results(results: list[DriftResult], path, meta: dict | None = None) -> None:
    """Write results to one compressed npz: arrays per result plus a JSON index of settings and figures."""
    import json

    arrays, index = {}, []
    for i, r in enumerate(results):
        for name in _ARRAYS:
            arrays[f"{i}_{name}"] = np.asarray(getattr(r, name))
        index.append({"settings": dataclasses.asdict(r.settings), "cuts": [int(c) for c in r.cuts],
                      "figures": r.figures, "ceiling": r.ceiling, "floor": r.floor, "seconds": r.seconds,
                      "extra": r.extra})
    arrays["index"] = np.array(json.dumps({"meta": meta or {}, "results": index}))
    np.savez_compressed(path, **arrays)


def load_results(path) -> tuple[list[DriftResult], dict]:
    """Read what :func:`save_results` wrote: (results, meta)."""
    import json

    with np.load(path) as data:
        index = json.loads(str(data["index"]))
        results = []
        for i, item in enumerate(index["results"]):
            arrays = {name: data[f"{i}_{name}"] for name in _ARRAYS}
            results.append(DriftResult(settings=DriftSettings(**item["settings"]), cuts=item["cuts"],
                                       figures=item["figures"], ceiling=item["ceiling"], floor=item["floor"],
                                       seconds=item["seconds"], extra=item.get("extra", {}), **arrays))
    return results, index["meta"]


def load_precomputed(cache: ResultCache, path=None, model_path=None) -> int:
    """Put the shipped sweep into ``cache`` (source "precomputed"). Returns how many results were loaded.

    A sweep made with other weights (its recorded model fingerprint differs from ``model_path``'s, default the
    shipped model) or other settings is ignored: it would show numbers the model in use did not produce.
    """
    from pathlib import Path

    from labkit.common import data_path

    path = Path(path) if path is not None else data_path(SWEEP_FILE)
    if not path.exists():
        return 0
    results, meta = load_results(path)
    if meta.get("steps") != INFERENCE_STEPS or meta.get("model_sha256") != model_fingerprint(model_path):
        return 0
    for r in results:
        cache.put(r, "precomputed")
    return len(results)


def sweep_settings(strengths=None) -> list[DriftSettings]:
    """The shipped sweep: every strategy at identity_strength 0, 0.1, ..., 1.5, the defaults otherwise."""
    strengths = strengths if strengths is not None else [round(0.1 * i, 1) for i in range(16)]
    return [DriftSettings(identity_strength=s, strategy=k) for k in STRATEGIES for s in strengths]


def precompute(path=None, strengths=None, model_path=None) -> list[DriftResult]:
    """Compute the sweep with the shipped checkpoint (or ``model_path``) and write it to ``data/drift_sweep.npz``.

    Each setting is generated alone, exactly as the lab would generate it, so a precomputed answer equals the
    one the lab would compute (same seed, same noise).
    """
    from tqdm.auto import tqdm

    from labkit.common import data_path

    engine = get_engine(model_path)
    results = [engine(s) for s in tqdm(sweep_settings(strengths), desc="drift sweep")]
    save_results(results, path or data_path(SWEEP_FILE),
                 meta={"steps": INFERENCE_STEPS, "model_sha256": model_fingerprint(model_path),
                       "made_by": "python -m labkit.widgets precompute"})
    return results


def readme_figure(out, model_path=None, identities: int = 4, num_chunks: int = 3, steps: int | None = None):
    """One PNG for the README: what the lab shows for its default setting (references, generated frames, the
    identity curve) beside the drift benchmark in small, the mean identity of each chunk for the four strategies
    on ``identities`` held-out identities (error bars: standard error). About a minute on a CPU."""
    from pathlib import Path

    from matplotlib.figure import Figure
    from PIL import Image

    from labkit.common import image_strip

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


def main(argv=None):
    """``python -m labkit.widgets precompute [--out PATH]``: rebuild the shipped sweep (a few minutes).
    ``python -m labkit.widgets readme-figure [--out docs/driftlab.png]``: the README's picture (about a minute)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("command", choices=["precompute", "readme-figure"])
    parser.add_argument("--out", help="where to write (default data/drift_sweep.npz; readme-figure: docs/driftlab.png)")
    parser.add_argument("--model", help="IdentityVideoDiT folder (default: the shipped data/identity_video_dit)")
    parser.add_argument("--identities", type=int, default=4, help="readme-figure: held-out identities per strategy")
    parser.add_argument("--chunks", type=int, default=3, help="readme-figure: chunks per video")
    parser.add_argument("--steps", type=int, help=f"readme-figure: denoising steps a chunk (default {INFERENCE_STEPS})")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.command == "readme-figure":
        out = readme_figure(args.out or "docs/driftlab.png", model_path=args.model, identities=args.identities,
                            num_chunks=args.chunks, steps=args.steps)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) in {time.perf_counter() - start:.0f} s")
        return
    results = precompute(args.out, model_path=args.model)
    print(f"wrote {len(results)} settings in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
