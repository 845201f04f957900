"""The DriftLab's precomputed sweep in ``data/``, and the lab's compute function.

A sweep is a list of :class:`labkit.drift.DriftResult` in one compressed npz (:func:`save_results`,
:func:`load_results`). The shipped one holds every strategy at identity_strength 0, 0.1, ..., 1.5
(:func:`sweep_settings`), made by :func:`precompute` with the model whose fingerprint it records; the lab loads
it only for that model (:func:`load_precomputed`). :func:`make_compute` is what the lab calls for a setting.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from labkit.common import data_path
from labkit.drift import (
    INFERENCE_STEPS,
    STRATEGIES,
    DriftResult,
    DriftSettings,
    get_engine,
    model_fingerprint,
    scorer_fingerprint,
)

__all__ = ["SWEEP_FILE", "save_results", "load_results", "load_precomputed", "sweep_settings", "precompute",
           "make_compute", "compute_drift"]

#: Shipped sweep: every strategy x identity_strength 0, 0.1, ..., 1.5 at the default other settings (64 videos,
#: about 3 MB). The slider's in-between positions (step 0.05) are computed live, in a couple of seconds.
SWEEP_FILE = "drift_sweep.npz"
_ARRAYS = ("frames", "references", "normalised", "frame_xy", "reference_xy", "others_xy")


def save_results(results: list[DriftResult], path, meta: dict | None = None) -> None:
    """Write results to one compressed npz: arrays per result plus a JSON index of settings and figures."""
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
    with np.load(path) as data:
        index = json.loads(str(data["index"]))
        results = []
        for i, item in enumerate(index["results"]):
            arrays = {name: data[f"{i}_{name}"] for name in _ARRAYS}
            results.append(DriftResult(settings=DriftSettings(**item["settings"]), cuts=item["cuts"],
                                       figures=item["figures"], ceiling=item["ceiling"], floor=item["floor"],
                                       seconds=item["seconds"], extra=item.get("extra", {}), **arrays))
    return results, index["meta"]


def load_precomputed(cache, path=None, model_path=None) -> int:
    """Put the shipped sweep into ``cache`` (a ResultCache; source "precomputed"). Returns how many were loaded.

    A sweep made with other weights (its recorded model fingerprint differs from ``model_path``'s, default the
    shipped model), scored by another recognizer, or with other settings is ignored: it would show numbers
    the model and scorer in use did not produce.
    """
    path = Path(path) if path is not None else data_path(SWEEP_FILE)
    if not path.exists():
        return 0
    results, meta = load_results(path)
    if (meta.get("steps") != INFERENCE_STEPS or meta.get("model_sha256") != model_fingerprint(model_path)
            or meta.get("scorer_sha256") != scorer_fingerprint()):
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
    engine = get_engine(model_path)
    results = [engine(s) for s in tqdm(sweep_settings(strengths), desc="drift sweep")]
    save_results(results, path or data_path(SWEEP_FILE),
                 meta={"steps": INFERENCE_STEPS, "model_sha256": model_fingerprint(model_path),
                       "scorer_sha256": scorer_fingerprint(),
                       "made_by": "python -m labkit.widgets precompute"})
    return results


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
