"""``python -m labkit.exercises``: the exercises by notebook, and the checks of a learner's solutions file.

    python -m labkit.exercises                          # list every exercise, by notebook
    python -m labkit.exercises my_solutions.py          # check the functions the file defines
    python -m labkit.exercises my_solutions.py --notebook 05
    python -m labkit.exercises --solution box_to_mask   # print a worked solution

A solutions file defines functions named after the exercises, or ``my_<name>`` as in the notebooks. A file
that cannot be read or run, or that defines none of the exercise names, is an error: one line on stderr
(naming the expected names and the closest one to a misspelt name) and exit status 2.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path


class SolutionsError(Exception):
    """A solutions file that cannot be checked; the message is the one line the command prints."""


def _notebook_titles() -> dict:
    folder = Path(__file__).resolve().parent.parent / "notebooks"
    return {p.name[:2]: p.stem for p in sorted(folder.glob("[0-9][0-9]_*.ipynb"))}


def load_solutions(path):
    """Import the file at ``path`` as a module; SolutionsError (one line) when it cannot be read or run."""
    path = Path(path)
    if not path.exists():
        raise SolutionsError(f"no such file: {path}")
    if not path.is_file():
        raise SolutionsError(f"{path} is not a file (give a .py file with your solutions)")
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SolutionsError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    try:
        code = compile(source, str(path), "exec")
    except (SyntaxError, ValueError) as err:
        where = f" (line {err.lineno})" if getattr(err, "lineno", None) else ""
        raise SolutionsError(f"{path} is not valid Python: {getattr(err, 'msg', err)}{where}") from None
    module = type(sys)("learner_solutions")
    module.__file__ = str(path)
    try:
        exec(code, module.__dict__)  # noqa: S102 - the learner's own file, run on the learner's request
    except BaseException as err:  # noqa: BLE001 - SystemExit or KeyboardInterrupt in the file are its errors too
        if isinstance(err, KeyboardInterrupt):
            raise
        tb = err.__traceback__
        line = None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == str(path):
                line = tb.tb_lineno
            tb = tb.tb_next
        where = f" at line {line}" if line else ""
        raise SolutionsError(f"{path} raised {type(err).__name__}{where} while loading: {err}".strip()) from None
    return module


def find_solutions(module, names) -> tuple[dict, list[str]]:
    """{exercise: function} for the names the module defines; and notes on functions that look misspelt."""
    found, notes = {}, []
    for name in names:
        fn = getattr(module, f"my_{name}", None) or getattr(module, name, None)
        if callable(fn):
            found[name] = fn
    expected = [n for name in names for n in (name, f"my_{name}")]
    own = [n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_")
           and getattr(v, "__module__", None) == module.__name__ and n not in expected]
    for n in own:
        close = difflib.get_close_matches(n, expected, n=1, cutoff=0.75)
        if close and close[0].removeprefix("my_") not in found:
            notes.append(f"{n} (did you mean {close[0]}?)")
    return found, notes


def run_solutions(path, notebook: str | None = None) -> dict:
    """Check every exercise that the file ``path`` defines a function for (named ``name`` or ``my_name``).

    Returns {exercise name: True (all cases pass) / False (some fail) / None (not attempted)}. Raises
    SolutionsError when the file cannot be loaded or defines none of the exercise names.
    """
    registry = importlib.import_module("labkit.exercises")
    names = registry.list_exercises(notebook)
    if not names:
        raise SolutionsError(f"no exercises in notebook {notebook!r}; notebooks with exercises: "
                             + ", ".join(sorted({registry._REGISTRY[n].notebook for n in registry.list_exercises()})))
    module = load_solutions(path)
    found, notes = find_solutions(module, names)
    if not found:
        suggestion = f"; closest: {', '.join(notes)}" if notes else ""
        raise SolutionsError(f"{path} defines none of the exercise functions; expected one or more of "
                             f"{', '.join(names)} (or my_<name>){suggestion}")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    results = {}
    for name in names:
        if name not in found:
            results[name] = None
            continue
        print(f"--- {registry._REGISTRY[name].notebook} {name}")
        result = registry.check(name, found[name])
        if result.passed is False:
            diagnoses = dict.fromkeys(c.diagnosis for c in result.cases if not c.passed and c.diagnosis)
            for why in list(diagnoses)[:2]:
                print(f"  hint: {why}")
        results[name] = result.passed
    return results


def main(argv=None):
    """The command line: list, check a solutions file, or print one solution. Returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m labkit.exercises",
        description="List the course's exercises, or check a solutions file: a .py file that defines functions "
                    "named after the exercises (or my_<name>, as in the notebooks).")
    parser.add_argument("solutions", nargs="?", help="a .py file with your solutions")
    parser.add_argument("--notebook", help="only this notebook's exercises, e.g. 09")
    parser.add_argument("--solution", metavar="NAME", help="print the worked solution of exercise NAME")
    args = parser.parse_args(argv)
    registry = importlib.import_module("labkit.exercises")
    titles = _notebook_titles()
    if args.solution:
        try:
            registry.solution(args.solution)
        except KeyError as err:
            print(f"error: {err.args[0]}", file=sys.stderr)
            return 2
        return 0
    if args.solutions is None:
        names = registry.list_exercises(args.notebook)
        if not names:
            print(f"error: no exercises in notebook {args.notebook!r}", file=sys.stderr)
            return 2
        last = None
        for name in names:
            nb = registry._REGISTRY[name].notebook
            if nb != last:
                print(titles.get(nb[:2], nb))
                last = nb
            print(f"    {name}")
        print("check your own solutions with:  python -m labkit.exercises my_solutions.py")
        return 0
    try:
        results = run_solutions(args.solutions, args.notebook)
    except SolutionsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\nsummary")
    for name, ok in results.items():
        nb = registry._REGISTRY[name].notebook
        status = "not attempted" if ok is None else ("PASS" if ok else "FAIL")
        print(f"  {titles.get(nb[:2], nb):<28} {name:<28} {status}")
    attempted = [ok for ok in results.values() if ok is not None]
    print(f"{sum(attempted)}/{len(attempted)} attempted exercises pass; {len(results) - len(attempted)} not attempted")
    return 0 if all(attempted) else 1


if __name__ == "__main__":
    raise SystemExit(main())
