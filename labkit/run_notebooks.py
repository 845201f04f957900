"""Execute notebooks top to bottom, headless, and report each one's time and peak memory.

CI runs every notebook this way in quick mode (``LABKIT_QUICK=1``), and any error in any cell fails
the run. The peak memory is the kernel's own maximum resident set size, read by one extra cell that is
added to the in-memory copy of the notebook (the file on disk is not changed).

    python -m labkit.run_notebooks                  # every notebook in notebooks/, quick mode
    python -m labkit.run_notebooks --normal         # normal mode (LABKIT_QUICK=0), what a learner gets
    python -m labkit.run_notebooks --normal --only 06 10   # only notebooks 06 and 10
    python -m labkit.run_notebooks notebooks/01_drift.ipynb --full   # --full is the same as --normal
    python -m labkit.run_notebooks --json bench.json   # the benchmark: also writes the figures as JSON

It is the course's benchmark too: it runs every notebook even when one fails, prints each one's time and
peak memory, the total, and whether they fit the budgets (quick mode: each notebook under 1.5 GB peak,
since Binder gives about 2 GB; the whole sequence under 15 minutes on a 2-core CPU. Normal mode: each
notebook under 3 minutes on a 2-core CPU, except 08_training, which trains a model: under 10 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

_PEAK_MARKER = "LABKIT_PEAK_RSS_MB="
#: Quick-mode budgets: peak memory of one notebook's kernel (MB) and wall time of the whole sequence (s).
PEAK_BUDGET_MB = 1536
TOTAL_BUDGET_S = 15 * 60
#: Normal-mode budgets: wall seconds of one notebook on a 2-core CPU, and of the training notebook.
NORMAL_BUDGET_S = 3 * 60
TRAINING_BUDGET_S = 10 * 60
TRAINING_NOTEBOOK = "08_"
# On Linux, VmHWM in /proc/self/status is this process's own peak. ru_maxrss is not: Linux carries it over
# from the parent at fork and across exec, so a kernel started by a big process (a long pytest run) would
# report the parent's size. macOS has no /proc; there ru_maxrss (bytes) is the fallback.
_PEAK_CELL = (
    "import resource, sys\n"
    "try:\n"
    "    _kb = next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
    "except OSError:\n"
    "    _kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform == 'darwin' else 1)\n"
    f"print('{_PEAK_MARKER}' + str(_kb / 1024))"
)


def notebook_paths(folder: str | Path | None = None) -> list[Path]:
    """Every course notebook, in order (00_welcome first)."""
    folder = Path(folder) if folder else Path(__file__).resolve().parent.parent / "notebooks"
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


def normal_budget(name: str) -> int:
    """A notebook's normal-mode wall-time budget in seconds (2-core CPU)."""
    return TRAINING_BUDGET_S if Path(name).name.startswith(TRAINING_NOTEBOOK) else NORMAL_BUDGET_S


def select(paths: list[Path], only: list[str]) -> list[Path]:
    """The notebooks whose name starts with one of ``only`` (``"06"``, ``"6"`` and ``"06_reference"`` all pick
    06_reference_conditioning). Raises ValueError for a prefix that picks none."""
    picked = []
    for prefix in only:
        prefix = prefix.zfill(2) if prefix.isdigit() else prefix
        hits = [p for p in paths if p.name.startswith(prefix)]
        if not hits:
            raise ValueError(f"--only {prefix}: no notebook starts with it; there are {[p.name for p in paths]}")
        picked += [p for p in hits if p not in picked]
    return sorted(picked)


def run_notebook(path: str | Path, quick: bool = True, timeout: int = 600, save_to: str | Path | None = None):
    """Run one notebook in a fresh kernel, in its own folder. Raises nbclient's CellExecutionError on error.

    Returns a dict with the notebook name, wall seconds and the kernel's peak memory in MB.
    """
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(_PEAK_CELL))
    # The kernel inherits these; this process gets its own values back afterwards. A kernel draws inline, as
    # in Jupyter, unless MPLBACKEND says otherwise.
    kernel_env = {"LABKIT_QUICK": "1" if quick else "0",
                  "MPLBACKEND": os.environ.get("MPLBACKEND", "module://matplotlib_inline.backend_inline")}
    env_before = {k: os.environ.get(k) for k in kernel_env}
    os.environ.update(kernel_env)
    start = time.perf_counter()
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        client.execute()
    finally:
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    seconds = time.perf_counter() - start
    peak = float("nan")
    for out in nb.cells[-1].get("outputs", []):
        for line in out.get("text", "").splitlines():
            if line.startswith(_PEAK_MARKER):
                peak = float(line[len(_PEAK_MARKER):])
    if save_to is not None:
        nb.cells.pop()
        nbformat.write(nb, save_to)
    return {"notebook": path.name, "seconds": round(seconds, 1), "peak_memory_mb": round(peak, 1)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (default: all in notebooks/)")
    parser.add_argument("--normal", "--full", dest="normal", action="store_true",
                        help="normal mode (LABKIT_QUICK=0, what a learner gets) instead of quick mode")
    parser.add_argument("--only", nargs="+", metavar="NN", default=[],
                        help="run only the notebooks whose names start with these (e.g. --only 06 10)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--save-dir", help="write executed copies (with outputs) into this folder")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.notebooks] or notebook_paths()
    if args.only:
        try:
            paths = select(paths, args.only)
        except ValueError as err:
            parser.error(str(err))
    results, total, failed = [], 0.0, []
    for p in paths:
        save_to = Path(args.save_dir) / p.name if args.save_dir else None
        if save_to is not None:
            save_to.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        try:
            r = run_notebook(p, quick=not args.normal, timeout=1200 if args.normal else 600, save_to=save_to)
        except Exception as err:  # noqa: BLE001 - a benchmark reports every notebook, then fails at the end
            first_line = (str(err).strip().splitlines() or [""])[-1][:200]
            r = {"notebook": p.name, "seconds": round(time.perf_counter() - start, 1),
                 "peak_memory_mb": float("nan"), "error": f"{type(err).__name__}: {first_line}"}
            failed.append(p.name)
        results.append(r)
        total += r["seconds"]
        if args.normal:
            budget = normal_budget(p.name)
            over = f"  OVER the {budget // 60} min budget" if r["seconds"] > budget else ""
        else:
            over = "  OVER the 1.5 GB budget" if r["peak_memory_mb"] > PEAK_BUDGET_MB else ""
        error = f"  FAILED: {r['error']}" if "error" in r else ""
        print(f"{r['notebook']:<34} {r['seconds']:>7.1f} s   peak {r['peak_memory_mb']:>7.1f} MB{over}{error}",
              flush=True)
    peaks = [r["peak_memory_mb"] for r in results if r["peak_memory_mb"] == r["peak_memory_mb"]]
    peak = max(peaks, default=float("nan"))
    print(f"{'total':<34} {total:>7.1f} s   max peak {peak:>7.1f} MB")
    if args.normal:
        slow = [r["notebook"] for r in results if r["seconds"] > normal_budget(r["notebook"])]
        print(f"budgets (normal mode): each notebook under {NORMAL_BUDGET_S // 60} min, the training notebook "
              f"under {TRAINING_BUDGET_S // 60} min on a 2-core CPU: "
              + (f"OVER: {', '.join(slow)}" if slow else "all within"))
    else:
        print(f"budgets (quick mode): whole sequence {total / 60:.1f} min of {TOTAL_BUDGET_S // 60} "
              f"({'within' if total <= TOTAL_BUDGET_S else 'OVER'}); largest peak {peak:.0f} MB of "
              f"{PEAK_BUDGET_MB} ({'within' if peak <= PEAK_BUDGET_MB else 'OVER'})")
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(failed)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"mode": "normal" if args.normal else "quick",
                                               "notebooks": results, "total_seconds": round(total, 1),
                                               "max_peak_memory_mb": peak, "failed": failed}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
