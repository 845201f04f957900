"""Character Consistency Lab: identity-consistent video generation, built and measured at lab scale.

Submodules load on first use (``labkit.synthfaces``, ``labkit.faces``, ...), so ``import labkit``
stays fast and touches neither torch nor the network.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = {
    "common", "synthfaces", "faces", "exercises", "identity", "attention", "losses",
    "model", "pipeline", "processors", "train", "metrics", "widgets", "run_notebooks",
}


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"labkit.{name}")
    raise AttributeError(f"module 'labkit' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
