"""The drift lab: move sliders, watch a character's identity hold or drift, in one notebook cell.

:class:`DriftLab` is an ipywidgets app. Its controls form a :class:`~labkit.drift.DriftSettings`; a compute
function ``(settings, progress) -> DriftResult`` turns one setting into a generated video and its
measurements. The app stays responsive on a 2-core CPU because the pieces under it are independent of the
model: a :class:`~labkit.driftlab_worker.ResultCache` and a :class:`~labkit.driftlab_worker.LatestWorker`
(one background thread that computes only the latest setting, and drops a stale result), and
:func:`~labkit.drift.validate_settings`, which turns bad input into a visible message, never a traceback.

The modules under the app, each with one job:

* :mod:`labkit.drift`: settings, the drift engine (the shipped generator and metrics), shared with the benchmark;
* :mod:`labkit.drift_sweep`: the precomputed sweep in ``data/`` and the lab's compute function;
* :mod:`labkit.driftlab_worker`: the cache and the background worker;
* :mod:`labkit.driftlab_views`: the PNG/GIF/HTML views (element ids ``driftlab-mean`` ... for the browser test).

``python -m labkit.widgets precompute`` rebuilds the shipped sweep; ``... readme-figure`` draws the README picture.
"""

from __future__ import annotations

import argparse
import html
import sys
import threading
import time
from collections import OrderedDict

import ipywidgets as W
import numpy as np
from IPython.display import display

from labkit.drift import (
    CONTEXT_FRAMES,
    DEGRADATIONS,
    INFERENCE_STEPS,
    MAX_CHUNKS,
    MAX_REFERENCES,
    MAX_STRENGTH,
    MIN_STRENGTH,
    NUM_HELDOUT,
    REFERENCE_QUALITIES,
    SCORING_REFERENCES,
    STRATEGIES,
    STRATEGY_LABELS,
    DriftEngine,
    DriftResult,
    DriftSettings,
    LabUnavailable,
    chunk_means,
    get_engine,
    model_fingerprint,
    model_folder,
    validate_settings,
)
from labkit.drift_sweep import (
    SWEEP_FILE,
    compute_drift,
    load_precomputed,
    load_results,
    make_compute,
    precompute,
    save_results,
    sweep_settings,
)
from labkit.driftlab_views import curve_png, figures_html, gif, projection_png, readme_figure, strip_png
from labkit.driftlab_worker import Cancelled, LatestWorker, ResultCache

__all__ = [
    "STRATEGIES", "REFERENCE_QUALITIES", "NUM_HELDOUT", "DriftSettings", "DriftResult", "Cancelled", "LabUnavailable",
    "validate_settings", "ResultCache", "LatestWorker", "DriftLab", "curve_png", "projection_png",
    # kept importable from here; they live in the modules above
    "CONTEXT_FRAMES", "DEGRADATIONS", "INFERENCE_STEPS", "MAX_REFERENCES", "SCORING_REFERENCES", "SWEEP_FILE",
    "DriftEngine", "chunk_means", "compute_drift", "get_engine", "load_precomputed", "load_results",
    "make_compute", "model_fingerprint", "model_folder", "precompute", "readme_figure", "save_results",
    "sweep_settings",
]


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
        drawn = {"references": strip_png(result.references), "video": gif(result.frames),
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
    if "google.colab" in sys.modules:
        try:
            from google.colab import output

            output.enable_custom_widget_manager()
        except Exception:  # noqa: BLE001 - older Colab runtimes render ipywidgets without it
            pass
    display(widget)


def main(argv=None):
    """``python -m labkit.widgets precompute [--out PATH]``: rebuild the shipped sweep (a few minutes).
    ``python -m labkit.widgets readme-figure [--out docs/driftlab.png]``: the README's picture (about a minute)."""
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
