"""Shared test settings: a fixed thread count keeps timings and numerics steady on a 2-core machine."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_terminal_summary(terminalreporter):
    """After a run that included tests/test_bad_inputs.py: how many entry points and bad inputs it tried."""
    import sys

    stats = next((getattr(m, "BAD_INPUT_STATS", None) for name, m in list(sys.modules.items())
                  if name.rpartition(".")[2] == "test_bad_inputs"), None)
    if not stats or not stats["entry_points"]:
        return
    failures = sum(1 for kind in ("failed", "error") for report in terminalreporter.stats.get(kind, [])
                   if "test_bad_inputs.py" in getattr(report, "nodeid", ""))
    terminalreporter.write_line(f"bad-input suite: {len(stats['entry_points'])} entry points, {stats['bad_inputs']} "
                                f"bad inputs tried (and {stats['good_inputs']} acceptable ones), {failures} failures")
