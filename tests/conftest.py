"""Shared test settings: a fixed thread count keeps timings and numerics steady on a 2-core machine."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
