"""Exercises: the learner writes a function, ``check(name, fn)`` tests it against labkit's own.

In a notebook an exercise is a stub that raises ``NotImplementedError`` and a check that says what to use next::

    def my_cosine_similarity_matrix(a, b):
        raise NotImplementedError("exercise cosine_similarity_matrix")

    my_cosine_similarity_matrix = check("cosine_similarity_matrix", my_cosine_similarity_matrix).function

``check`` runs the learner's function on several cases, edge cases on both sides of every boundary included,
and prints one PASS/FAIL line per case. Besides the values it checks the result's shape and dtype, that the
inputs are unchanged after the call, and, where the exercise is a loss or a layer that trains, the gradients;
where the exercise asks for one call of an encoder, the calls. An unsolved stub is "not attempted yet".
``.function`` is the learner's function once every case passes, and labkit's own until then, so the notebook
runs top to bottom either way. After a failed check ``hint(name)`` gives graded hints (first what the failing
cases mean, then more specific ones, never the code); ``solution(name)`` prints a worked solution.

The checkers live in ``labkit.exercise_checks_*`` (one section per notebook); the worked solutions in
``labkit.solutions``; the command line (``python -m labkit.exercises``) in ``labkit.exercise_cli``.
"""

from __future__ import annotations

import importlib
import inspect
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

#: Modules whose ``@register`` decorators define the exercises; imported on first use.
CHECK_MODULES = ("labkit.exercise_checks_arrays", "labkit.exercise_checks_models")


# ================================================================================================ registry
@dataclass
class Case:
    """One checked case: a short description, whether it passed, what was wrong, and what that suggests."""

    description: str
    passed: bool
    detail: str = ""
    diagnosis: str = ""


@dataclass
class Exercise:
    """A registered exercise: its checker, notebook, labkit's own implementation and its graded hints."""

    name: str
    notebook: str
    hints: tuple
    checker: Callable
    reference: Callable


@dataclass
class CheckResult:
    """What ``check`` found. ``passed``: True, False, or None (not attempted). Truthy only when it passed.

    ``function`` is the learner's function when it passed and labkit's own otherwise. In a notebook the
    result displays nothing (no stray ``True`` under the cell).
    """

    name: str
    passed: bool | None
    cases: list = field(default_factory=list)
    function: Callable | None = None

    def __bool__(self):
        return self.passed is True

    def __repr__(self):
        status = {True: "passed", False: "failed", None: "not attempted"}[self.passed]
        return f"<check {self.name}: {status}, {sum(c.passed for c in self.cases)}/{len(self.cases)} cases>"

    def _ipython_display_(self):
        pass


class NotAttempted(Exception):
    """Raised inside a checker when the learner's function is still the stub (raises NotImplementedError)."""


_REGISTRY: dict[str, Exercise] = {}
_STATE: dict[str, dict] = {}  # per exercise: the last check's failing cases and the hint level reached
_LOADED = False


def register(name: str, notebook: str, hints, reference: Callable):
    """Decorator: register ``checker(fn) -> list[Case]`` as the checker of exercise ``name``.

    ``hints``: graded hints, general to specific, none of them code. ``reference``: labkit's own
    implementation with the learner's signature (what the notebook uses until the exercise passes).
    """
    hints = (hints,) if isinstance(hints, str) else tuple(hints)

    def deco(checker):
        if name in _REGISTRY:
            raise ValueError(f"exercise {name!r} is already registered (notebook {_REGISTRY[name].notebook})")
        _REGISTRY[name] = Exercise(name, notebook, hints, checker, reference)
        return checker

    return deco


def _load():
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for module in CHECK_MODULES:
            importlib.import_module(module)


def _exercise(name: str) -> Exercise:
    _load()
    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        raise KeyError(f"no exercise named {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                       + f"; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_exercises(notebook: str | None = None) -> list[str]:
    """Names of the registered exercises in notebook order (only those of ``notebook``, e.g. "02", if given)."""
    _load()
    names = [n for n, e in _REGISTRY.items() if notebook is None or e.notebook.startswith(str(notebook))]
    return sorted(names, key=lambda n: _REGISTRY[n].notebook)


def reference(name: str) -> Callable:
    """Labkit's own implementation of exercise ``name``, with the learner's signature."""
    return _exercise(name).reference


# ================================================================================================ comparing
def _short(e: BaseException) -> str:
    return traceback.format_exception_only(type(e), e)[-1].strip()


def compare(got, expected, atol: float = 1e-5, rtol: float = 1e-4, dtype: bool = True) -> str:
    """'' when ``got`` matches ``expected`` (a tensor of the same shape, dtype and values), else what differs."""
    if not torch.is_tensor(got):
        kind = type(got).__module__.split(".")[0] + "." + type(got).__name__ if got is not None else "None"
        return f"returned {kind}, expected a torch tensor"
    expected = torch.as_tensor(expected)
    if tuple(got.shape) != tuple(expected.shape):
        return f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    if dtype and got.dtype != expected.dtype:
        return f"dtype {got.dtype}, expected {expected.dtype}"
    if expected.dtype == torch.bool or got.dtype == torch.bool:
        wrong = (got.detach().cpu().bool() != expected.detach().cpu().bool()).sum().item()
        return f"{wrong} of {expected.numel()} entries differ from labkit's" if wrong else ""
    got, expected = got.detach().double().cpu(), expected.detach().double().cpu()
    if not torch.allclose(got, expected, atol=atol, rtol=rtol, equal_nan=True):
        nan = got.isnan() & ~expected.isnan()
        if nan.any():
            return f"{int(nan.sum())} value(s) are nan where labkit's are numbers"
        err = (got - expected).abs().nan_to_num(float("inf")).max().item()
        return f"values differ from labkit's by up to {err:.3g} (tolerance {atol:g})"
    return ""


def _snapshot(obj):
    if torch.is_tensor(obj):
        return obj.detach().clone()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_snapshot(o) for o in obj) if isinstance(obj, tuple) else [_snapshot(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _snapshot(v) for k, v in obj.items()}
    return obj


def _changed(before, after) -> bool:
    if torch.is_tensor(before):
        return (not torch.is_tensor(after) or before.shape != after.shape or before.dtype != after.dtype
                or not torch.equal(torch.nan_to_num(before), torch.nan_to_num(after.detach())))
    if isinstance(before, (list, tuple)):
        return (not isinstance(after, (list, tuple)) or len(before) != len(after)
                or any(_changed(b, a) for b, a in zip(before, after)))
    if isinstance(before, dict):
        return not isinstance(after, dict) or any(_changed(v, after.get(k)) for k, v in before.items())
    return False


def _call(fn, args, kwargs, names):
    """Call the learner's function; returns (result, problem). NotImplementedError means "not attempted"."""
    snapshot = _snapshot((args, kwargs))
    try:
        got = fn(*args, **kwargs)
    except NotImplementedError as e:
        raise NotAttempted(str(e)) from None
    except Exception as e:  # noqa: BLE001 - the learner's error is reported, not raised
        return None, f"raised {_short(e)}"
    for i, (before, after) in enumerate(zip(snapshot[0], args)):
        if _changed(before, after):
            name = names[i] if names and i < len(names) else f"argument {i + 1}"
            return got, f"changed its input {name} in place"
    for k, before in snapshot[1].items():
        if _changed(before, kwargs[k]):
            return got, f"changed its input {k} in place"
    return got, ""


IN_PLACE = "the function modifies one of its inputs: work on new tensors, the caller still needs its own."


def run_case(description: str, fn: Callable, args: tuple, expected, kwargs: dict | None = None,
             diagnosis: str = "", names=None, atol: float = 1e-5, rtol: float = 1e-4, dtype: bool = True) -> Case:
    """Call the learner's ``fn(*args, **kwargs)``; compare with ``expected``; the inputs must be unchanged."""
    got, problem = _call(fn, args, kwargs or {}, names)
    if problem:
        return Case(description, False, problem, IN_PLACE if "in place" in problem else diagnosis)
    detail = compare(got, expected, atol=atol, rtol=rtol, dtype=dtype)
    if got is None:
        diagnosis = "the function gives back nothing: is its result returned?"
    elif detail.startswith("returned"):
        diagnosis = "the result must be a torch tensor (not a number, list or array), like labkit's."
    elif detail.startswith("dtype"):
        diagnosis = (f"the result must have labkit's dtype, {detail.rpartition(' ')[2]}: what comes after this "
                     f"exercise (and labkit's own code) expects it. " + diagnosis).strip()
    return Case(description, not detail, detail, diagnosis)


def grad_case(description: str, fn: Callable, ref: Callable, args: tuple, wrt: dict, modules=(),
              diagnosis: str = "", atol: float = 1e-4, rtol: float = 1e-3) -> Case:
    """Gradients of the learner's result against labkit's, w.r.t. ``wrt`` ({arg index: name}) and ``modules``.

    Both results are contracted with the same fixed random weights and back-propagated; the gradients of the
    inputs in ``wrt`` and of every parameter of ``modules`` (a {name: nn.Module} dict) must match.
    """
    def grads(f):
        a = [x.detach().clone().requires_grad_(True) if i in wrt else x for i, x in enumerate(args)]
        for m in modules.values() if isinstance(modules, dict) else ():
            m.zero_grad(set_to_none=True)
        with torch.enable_grad():
            out = f(*a)
            if not torch.is_tensor(out):
                return None, "did not return a tensor"
            if not out.requires_grad:
                return None, f"no gradient reaches {' or '.join(wrt.values())}: the result carries none at all"
            g = torch.Generator().manual_seed(0)
            (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum().backward()
        found = {wrt[i]: a[i].grad for i in wrt}
        for mname, m in (modules.items() if isinstance(modules, dict) else ()):
            found.update({f"{mname}.{p}": q.grad for p, q in m.named_parameters()})
        return found, ""

    expected, _ = grads(ref)
    try:
        got, problem = grads(fn)
    except NotImplementedError as e:
        raise NotAttempted(str(e)) from None
    except Exception as e:  # noqa: BLE001
        return Case(description, False, f"raised {_short(e)} during backward", diagnosis)
    if problem:
        return Case(description, False, problem, diagnosis)
    for name, want in expected.items():
        have = got.get(name)
        if want is not None and (have is None or not have.abs().sum() > 0) and want.abs().sum() > 0:
            return Case(description, False, f"no gradient reaches {name}", diagnosis)
        if want is not None and have is not None and not torch.allclose(have.double(), want.double(), atol=atol,
                                                                         rtol=rtol):
            err = (have - want).abs().max().item()
            return Case(description, False, f"the gradient w.r.t. {name} differs from labkit's by up to {err:.3g}",
                        diagnosis)
    return Case(description, True)


class CountCalls(torch.nn.Module):
    """Wraps a module and counts its calls (for exercises that ask for one call of an encoder)."""

    def __init__(self, module):
        super().__init__()
        self.module, self.calls = module, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.module(*args, **kwargs)


# ================================================================================================ checking
def check(name: str, fn: Callable, verbose: bool = True) -> CheckResult:
    """Run exercise ``name``'s checker on the learner's ``fn``; print each case PASS/FAIL and a summary."""
    ex = _exercise(name)
    fn_name = getattr(fn, "__name__", "your function")
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            cases = ex.checker(fn)
    except NotAttempted:
        _STATE[name] = {"failures": [], "level": 0, "passed": None}
        if verbose:
            print(f"{name}: not attempted yet ({fn_name} raises NotImplementedError). The notebook goes on with "
                  f"labkit's own implementation; write the function and run this cell again.")
        return CheckResult(name, None, [], ex.reference)
    ok = all(c.passed for c in cases)
    state = _STATE.setdefault(name, {"level": 0})
    state.update(failures=[c for c in cases if not c.passed], passed=ok)
    if not ok and state.get("level", 0) and state.get("last_failed") != [c.description for c in state["failures"]]:
        state["level"] = 0  # other cases fail now: the hints start again from the diagnosis
    state["last_failed"] = [c.description for c in state["failures"]]
    if verbose:
        for c in cases:
            print(f"  {'PASS' if c.passed else 'FAIL'}  {c.description}" + (f": {c.detail}" if c.detail else ""))
        passed = sum(c.passed for c in cases)
        if ok:
            print(f"{name}: all {len(cases)} cases passed. What follows uses your {fn_name}.")
        else:
            print(f"{name}: {passed}/{len(cases)} cases passed. What follows uses labkit's own implementation "
                  f"until yours passes.\n  hint({name!r}) explains the failing cases (ask again for more); "
                  f"solution({name!r}) shows a worked solution.")
    return CheckResult(name, ok, cases, fn if ok else ex.reference)


class _Quiet(str):
    """A str that a notebook does not show again as the cell's result (it was printed already)."""

    def _ipython_display_(self):
        pass


def hint(name: str) -> str:
    """The next graded hint for exercise ``name``; hints open after a failed ``check``. Prints and returns it."""
    ex = _exercise(name)
    state = _STATE.get(name)
    if not state or state.get("passed") is None:
        text = (f"No hint yet for {name}: hints open after a failed check. Write the function and run "
                f"check({name!r}, ...) first.")
    elif state["passed"]:
        text = f"Your last check of {name} passed: no hint needed."
    else:
        level = state["level"] = state.get("level", 0) + 1
        total = 1 + len(ex.hints)
        if level == 1:
            seen, lines = set(), []
            for c in state["failures"]:
                why = c.diagnosis or "compare your result on this case with what the exercise asks for."
                if why not in seen:
                    seen.add(why)
                    lines.append(f"  - {c.description}: {why}")
            text = f"Hint 1 of {total} for {name} (what the failing cases mean):\n" + "\n".join(lines[:4])
        elif level <= total:
            text = f"Hint {level} of {total} for {name}: {ex.hints[level - 2]}"
        else:
            state["level"] = total
            text = f"No more hints for {name}. solution({name!r}) prints a worked solution."
    print(text)
    return _Quiet(text)


def solution(name: str) -> str:
    """Print (and return) the worked solution of exercise ``name``, from ``labkit.solutions``."""
    _exercise(name)
    from labkit import solutions

    source = inspect.getsource(getattr(solutions, f"my_{name}"))
    print(f"# A worked solution of {name} (labkit/solutions.py):\n{source}")
    return _Quiet(source)


def run_solutions(path, notebook: str | None = None) -> dict:
    """Check the exercises a solutions file defines: see ``labkit.exercise_cli.run_solutions``."""
    from labkit.exercise_cli import run_solutions as run

    return run(path, notebook)


def main(argv=None):
    from labkit.exercise_cli import main as cli

    return cli(argv)


if __name__ == "__main__":
    raise SystemExit(main())
