"""environment.yml (conda) and binder/ install what pyproject.toml declares: the same packages, the same pins and
lower bounds, the same Python and the same system programs.

Each file is read for what it installs: a pip entry ``-e .`` or ``.[dev]`` stands for pyproject.toml's dependencies
(and that extra's), a requirement written out must match pyproject.toml's entry for the same package, a conda
package must be a pyproject dependency with the same bounds (or Python, pip or a system program).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")
yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
#: Programs, not Python packages: conda installs them in environment.yml, apt in binder/apt.txt.
SYSTEM_PROGRAMS = {"ffmpeg"}
#: Conda names of pip packages where they differ.
CONDA_NAMES = {"pytorch": "torch"}
LOCAL = re.compile(r"""^(?:-e\s+|--editable\s+)?["']?\.(?:\[(?P<extras>[\w,\s-]+)\])?["']?$""")


def _declared(extras=()) -> dict[str, str]:
    """pyproject.toml's requirements (dependencies plus the given extras): canonical name -> specifier text."""
    lines = list(PYPROJECT["dependencies"])
    for extra in extras:
        lines += PYPROJECT["optional-dependencies"][extra]
    return _by_name(lines)


def _by_name(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        req = Requirement(line)
        out[canonicalize_name(req.name)] = str(SpecifierSet(str(req.specifier)))
    return out


def _pip_targets(targets, here: Path) -> dict[str, str]:
    """What pip installs for ``targets`` (arguments of pip install): name -> specifier, local project expanded."""
    installed: dict[str, str] = {}
    targets = list(targets)
    while targets:
        target = targets.pop(0).strip()
        if target in ("-r", "--requirement"):
            lines = (here / targets.pop(0)).read_text().splitlines()
            installed.update(_pip_targets([t for t in lines if t.strip() and not t.startswith("#")], here))
        elif target in ("-e", "--editable"):
            targets[0] = f"-e {targets[0]}"
        elif (local := LOCAL.match(target)) is not None:
            extras = [e.strip() for e in (local["extras"] or "").split(",") if e.strip()]
            installed.update(_declared(extras))
        elif not target.startswith("-"):
            installed.update(_by_name([target]))
    return installed


def _compare(installed: dict[str, str], where: str, extras=()) -> None:
    declared = _declared(extras)
    missing = sorted(set(declared) - set(installed))
    assert not missing, f"{where} does not install {missing} (pyproject.toml declares them)"
    extra_names = sorted(set(installed) - set(declared))
    assert not extra_names, f"{where} installs {extra_names}, which pyproject.toml does not declare"
    differ = {n: (installed[n], declared[n]) for n in declared if installed[n] != declared[n]}
    assert not differ, f"{where} pins differently from pyproject.toml (theirs, pyproject's): {differ}"


def _conda_environment():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda, pip = [], []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += dep.get("pip", [])
        else:
            conda.append(str(dep))
    return conda, pip


def _binder_pip_targets() -> list[str]:
    """Arguments of every ``pip install`` in binder/postBuild, and binder/requirements.txt if there is one."""
    targets = []
    post_build = REPO / "binder" / "postBuild"
    for line in post_build.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if "pip" in words and "install" in words[words.index("pip"):]:
            targets += words[words.index("install", words.index("pip")) + 1:]
    if (REPO / "binder" / "requirements.txt").is_file():
        targets += ["-r", "requirements.txt"]
    return targets


def test_environment_yml_installs_what_pyproject_declares():
    conda, pip = _conda_environment()
    installed = _pip_targets(pip, REPO)
    extras = sorted({e.strip() for t in pip if (m := LOCAL.match(t.strip())) and m["extras"]
                     for e in m["extras"].split(",")})
    for spec in conda:
        name, version = re.match(r"^([A-Za-z0-9_.-]+)\s*(.*)$", spec).groups()
        if name in ("python", "pip") or name in SYSTEM_PROGRAMS:
            continue
        name = canonicalize_name(CONDA_NAMES.get(name, name))
        version = re.sub(r"^=(?!=)", "==", version.replace(" ", ""))
        installed[name] = str(SpecifierSet(version))
    _compare(installed, "environment.yml", extras)


def test_binder_installs_what_pyproject_declares():
    _compare(_pip_targets(_binder_pip_targets(), REPO / "binder"), "binder/postBuild")


def test_python_version_and_system_programs_agree():
    conda, _ = _conda_environment()
    conda_python = next(re.sub(r"^python\s*=*", "", c) for c in conda if re.match(r"^python\b", c))
    binder_python = (REPO / "binder" / "runtime.txt").read_text().strip().removeprefix("python-")
    assert conda_python == binder_python, f"environment.yml has Python {conda_python}, binder {binder_python}"
    assert SpecifierSet(PYPROJECT["requires-python"]).contains(conda_python), PYPROJECT["requires-python"]
    conda_programs = {re.match(r"^[A-Za-z0-9_.-]+", c)[0] for c in conda} & SYSTEM_PROGRAMS
    apt = {line.strip() for line in (REPO / "binder" / "apt.txt").read_text().splitlines()
           if line.strip() and not line.startswith("#")}
    assert conda_programs == apt, f"environment.yml installs {conda_programs}, binder/apt.txt {apt}"
