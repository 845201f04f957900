"""Training checkpoints: written atomically, read without running code, checked for damage and for the run.

A checkpoint is a dict of tensors and plain Python values (weights, optimizer, LR schedule, step, losses,
config). :func:`save_atomic` writes it to a temporary file and renames it (``os.replace``), so an interruption
never leaves half a checkpoint; it stores a SHA-256 of the contents, because ``torch.load`` checks no CRC.
:func:`load_checkpoint` reads it with ``weights_only=True`` (nothing in the file is executed) and refuses a
corrupt file, a damaged one (checksum) and one that would need code to load. :func:`check_same_run` refuses
to resume a checkpoint written by another configuration.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from labkit.train_config import TrainConfig

__all__ = ["load_checkpoint", "save_atomic", "checksum", "plain", "check_same_run", "state_step",
           "write_json_atomic", "RESUMABLE_CHANGES"]

# Why a weights-only load failed, by the unpickler's message: these mean the file holds a Python object whose
# loading would run code (a class to build, a function to call), not that its bytes are damaged.
_CODE_MARKERS = ("Unsupported global", "unsupported GLOBAL", "Trying to call reduce", "Can only create new object",
                 "Can only build")
#: What every training checkpoint holds.
_CHECKPOINT_KEYS = ("model", "optimizer", "lr_scheduler", "step", "losses")


def load_checkpoint(path) -> dict:
    """Read a training checkpoint (weights, optimizer, LR schedule, step, losses, config).

    Checkpoints hold only tensors and plain Python values (dict, list, tuple, int, float, str, bool, None), so
    they are read with ``torch.load(weights_only=True)``: nothing in the file is executed. A file that would
    need code to run to load (a pickled object) is refused with a ValueError, and so is a corrupt one.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = str(err).splitlines()
        detail = next((s.strip() for s in lines if any(m in s for m in _CODE_MARKERS)), None)
        if detail is not None:
            raise ValueError(f"training checkpoint {path} needs arbitrary code to load and is refused: it holds a "
                             f"pickled Python object ({detail.split(' was not')[0][:200]}), while a training "
                             "checkpoint holds only tensors and plain values. Use checkpoints written by "
                             "labkit.train, or start afresh (--fresh or another --out).") from None
        reason = next((s.strip() for s in lines[::-1] if "Unsupported" in s), str(err)[:200])
        raise ValueError(f"training checkpoint {path} is corrupt, or needs arbitrary code to load, and is refused "
                         f"(UnpicklingError: {reason}); start afresh with --fresh or another --out") from None
    except Exception as err:  # noqa: BLE001 - re-raised with the path named
        raise ValueError(f"training checkpoint {path} is corrupt or unreadable ({type(err).__name__}: "
                         f"{str(err)[:300]}); start afresh with --fresh or another --out") from err
    if isinstance(state, dict) and "checksum" in state and state["checksum"] != checksum(state):
        raise ValueError(f"training checkpoint {path} is corrupt: its contents do not match the checksum written "
                         "with it (damaged on disk or in a copy); start afresh with --fresh or another --out")
    missing = [k for k in _CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing or not isinstance(state.get("config", {}), dict):
        raise ValueError(f"{path} is not a training checkpoint of labkit.train "
                         f"({'missing ' + ', '.join(missing) if missing else 'its config is not a dict'})")
    return state


def plain(obj, where: str = "checkpoint"):
    """``obj`` with only tensors and plain Python values, which a weights-only load reads back as they were.

    NumPy scalars become Python numbers, NumPy arrays tensors, named tuples tuples, int/str subclasses their
    base type; anything else raises TypeError naming where it is (at save time, not at the next load).
    """
    if obj is None or isinstance(obj, torch.Tensor) or type(obj) in (bool, int, float, str):
        return obj
    if isinstance(obj, np.generic) and obj.dtype.kind in "biuf":
        return obj.item()
    if isinstance(obj, np.ndarray) and obj.dtype.kind in "biuf":
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, (bool, int, float, str)):  # IntEnum, str subclasses...: their plain base type
        return next(t(obj) for t in (bool, int, float, str) if isinstance(obj, t))
    if isinstance(obj, dict):
        out = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            out[plain(k, f"a key of {where}")] = plain(v, f"{where}[{k!r}]")
        if getattr(obj, "_metadata", None) is not None:  # nn.Module.state_dict's per-module versions
            out._metadata = plain(obj._metadata, f"{where}._metadata")
        return out
    if isinstance(obj, (list, tuple)):
        items = [plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__name__}; a training checkpoint holds only "
                    "tensors, dicts, lists, tuples, int, float, str, bool and None (so that it loads without "
                    "running code)")


def checksum(state: dict) -> str:
    """SHA-256 of everything in a checkpoint but its "checksum" entry: every tensor's bytes, dtype and shape and
    every plain value, in order. torch.load checks no CRC, so without it a flipped bit would load silently."""
    h = hashlib.sha256()

    def feed(x):
        if isinstance(x, torch.Tensor):
            h.update(f"T{x.dtype}{tuple(x.shape)}".encode())
            h.update(x.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            h.update(f"D{len(x)}".encode())
            for k, v in x.items():
                feed(k)
                feed(v)
        elif isinstance(x, (list, tuple)):
            h.update(f"{type(x).__name__[0]}{len(x)}".encode())
            for v in x:
                feed(v)
        else:
            h.update(f"{type(x).__name__}:{x!r};".encode())

    feed({k: v for k, v in state.items() if k != "checksum"})
    return h.hexdigest()


def save_atomic(obj, path: Path) -> None:
    """Write ``obj`` (a checkpoint dict, with its checksum added) to ``path`` through a temporary file."""
    obj = plain(obj)  # tensors and plain values only: load_checkpoint reads it with weights_only=True
    if isinstance(obj, dict):
        obj["checksum"] = checksum(obj)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)  # atomic: readers see the old file or the new one, never half of one


def write_json_atomic(obj, path: Path) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file, so readers never see half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


# What may change between an interrupted run and its resumption without making it a different run.
RESUMABLE_CHANGES = {"device", "num_threads", "log_every", "checkpoint_every"}


def check_same_run(saved: dict, cfg: TrainConfig, path) -> None:
    """Refuse to resume a checkpoint written by a different configuration (other model, seed, steps...)."""
    current = asdict(cfg)
    differ = sorted(k for k in current if k not in RESUMABLE_CHANGES and k in saved
                    and json.dumps(saved[k], default=str) != json.dumps(current[k], default=str))
    if differ:
        detail = ", ".join(f"{k}: {saved[k]!r} in the checkpoint, {current[k]!r} now" for k in differ)
        raise ValueError(f"{path} was written by a different run ({detail}); resume with the same settings, "
                         "or pass --fresh / another --out to start a new run")


def state_step(path) -> int | None:
    """The step stored in a checkpoint, or None when there is none."""
    try:
        return load_checkpoint(path)["step"]
    except (ValueError, FileNotFoundError):
        return None


