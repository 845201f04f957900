"""Character Consistency Lab: identity-consistent video generation, built and measured at lab scale.

Submodules load on first use (``labkit.synthfaces``, ``labkit.faces``, ...), so ``import labkit``
stays fast and touches neither torch nor the network.
"""

import importlib
from pathlib import Path

__version__ = "0.1.0"

# Every module of the package, by file name.
_SUBMODULES = {p.stem for p in Path(__file__).parent.glob("*.py") if not p.stem.startswith("_")}


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"labkit.{name}")
    raise AttributeError(f"module 'labkit' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
