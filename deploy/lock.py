#!/usr/bin/env python3
"""rotator's dependency pins: the hash-pinned lock files the deployable artifacts install from,
and the lowest-version constraints CI tests the declared lower bounds with.

One command refreshes both lock files (it needs uv, from the dev extras, and a package index)::

    python deploy/lock.py

- ``deploy/docker/requirements.lock``: what the Docker image installs (``pip install --no-deps
  --require-hashes``): the runtime dependencies of the extras in :data:`DOCKER_EXTRAS` and the
  build backend (``[build-system] requires``, so the image builds rotator itself with
  ``--no-build-isolation --no-index``), resolved for CPython 3.11 on glibc Linux, the base image.
- ``deploy/aws/requirements.txt``: what ``deploy/aws/build_zip.py`` installs into the Lambda zip,
  resolved for the Lambda platform the build targets (manylinux2014, CPython 3.11, the oldest
  runtime the build offers), in ``# [section]`` blocks: ``core`` (``[project] dependencies``),
  ``http`` (the ``http`` extra), ``boto3`` (the ``aws`` extra). A section holds its closure minus
  what ``core`` holds; the sections are resolved together, so their versions agree.

Both are made by ``uv pip compile --generate-hashes`` (every file of a pinned release is hashed:
each architecture and Python version the targets allow). Edit pyproject.toml, never the locks.

``python deploy/lock.py --lowest`` prints, instead, a constraints file that pins every direct
dependency (runtime and dev, every extra) to the lower bound pyproject.toml declares: ``.ci/deps-lowest``
installs with it, so the lower bounds are tested, not only written down.

Exit codes: 0 done; 2 bad input (pyproject.toml, options); 1 uv failed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
DOCKER_LOCK = ROOT / "deploy" / "docker" / "requirements.lock"
LAMBDA_LOCK = ROOT / "deploy" / "aws" / "requirements.txt"
COMMAND = "python deploy/lock.py"

#: What the daemon image needs: every store and issuer SDK, PostgreSQL, scheduler and metrics
#: (not ``demo``: the OpenBao dev server is for trying rotator out, not for production).
DOCKER_EXTRAS = ("vault", "aws", "http", "postgres", "daemon", "profile")
DOCKER_TARGET = ("--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_36")  # bookworm: glibc 2.36
#: Lambda section -> the extra whose dependencies it adds (None: ``[project] dependencies``).
LAMBDA_SECTIONS: dict[str, str | None] = {"core": None, "http": "http", "boto3": "aws"}
LAMBDA_TARGET = ("--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_17")  # manylinux2014

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


class LockError(Exception):
    """Bad input: the message says what and how to fix it."""


# --------------------------------------------------------------------------------------------
# Reading pyproject.toml


def load_project(pyproject: Path = PYPROJECT) -> dict[str, Any]:
    try:
        project: dict[str, Any] = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    except (OSError, tomllib.TOMLDecodeError, KeyError) as exc:
        raise LockError(f"cannot read [project] from {pyproject}: {exc}") from None
    return project


def requirements(project: Mapping[str, Any], extras: Iterable[str] = (), *, core: bool = True) -> list[Requirement]:
    """The direct requirements of ``[project] dependencies`` (if ``core``) and of ``extras``,
    with the project's own ``name[extra,...]`` references expanded."""
    name = canonicalize_name(project["name"])
    optional = project.get("optional-dependencies", {})
    found: list[Requirement] = []
    seen: set[str] = set()

    def add(lines: Iterable[str]) -> None:
        for line in lines:
            requirement = Requirement(line)
            if canonicalize_name(requirement.name) == name:
                expand(requirement.extras)
            elif str(requirement) not in seen:
                seen.add(str(requirement))
                found.append(requirement)

    def expand(names: Iterable[str]) -> None:
        for extra in sorted(names):
            if extra not in optional:
                raise LockError(f"pyproject.toml has no extra {extra!r} (extras: {', '.join(sorted(optional))})")
            add(optional[extra])

    if core:
        add(project.get("dependencies", []))
    expand(extras)
    return found


def lowest_constraints(project: Mapping[str, Any]) -> list[str]:
    """``name==X`` for every direct dependency (all extras) with a lower bound ``>=X`` or a pin ``==X``;
    the highest bound where a name appears more than once. Constraints carry no extras (pip refuses them)."""
    from packaging.version import Version

    bounds: dict[str, Version] = {}
    for requirement in requirements(project, project.get("optional-dependencies", {})):
        for spec in requirement.specifier:
            if spec.operator in (">=", "==", "~=") and "*" not in spec.version:
                key = canonicalize_name(requirement.name)
                bounds[key] = max(bounds.get(key, Version(spec.version)), Version(spec.version))
    return [f"{name}=={bounds[name]}" for name in sorted(bounds)]


# --------------------------------------------------------------------------------------------
# Reading a lock file (also used by the tests)


def pins(text: str) -> dict[str, tuple[str, list[str]]]:
    """Canonical name -> (version, its sha256 hashes) of every requirement of a ``--generate-hashes`` file."""
    found: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=\S)", text):
        match = _PIN.match(block)
        if match:
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})\b", block)
            found[canonicalize_name(match[1])] = (match[2], hashes)
    return found


def requirement_lines(text: str) -> list[str]:
    """Every line that is not a comment, a blank or a hash continuation: each must be a ``name==version`` pin."""
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith(("#", "--hash="))]


# --------------------------------------------------------------------------------------------
# Making the lock files


def _uv() -> str:
    beside = Path(sys.executable).parent / "uv"
    if beside.exists():
        return str(beside)
    raise LockError("uv is not installed in this Python's environment: pip install -e '.[dev]' (it provides uv)")


def compile_lock(
    inputs: Sequence[Requirement | str],
    target: Sequence[str],
    *,
    constraints: Path | None = None,
    omit: Iterable[str] = (),
    hashes: bool = True,
) -> str:
    """``uv pip compile`` of ``inputs`` for ``target``: the pinned closure, without uv's header."""
    with tempfile.TemporaryDirectory(prefix="rotator-lock-") as tmp:
        source = Path(tmp) / "requirements.in"
        source.write_text("".join(f"{line}\n" for line in inputs), encoding="utf-8")
        command = [
            _uv(), "pip", "compile", str(source), *target, "--quiet", "--no-header", "--annotation-style", "line",
            *(["--generate-hashes"] if hashes else []),
            *(["--constraint", str(constraints)] if constraints else []),
            *(arg for name in omit for arg in ("--no-emit-package", name)),
        ]  # fmt: skip
        # UV_NO_CONFIG: no uv.toml of the user's changes what is resolved.
        result = subprocess.run(
            command, capture_output=True, text=True, check=False, env={**os.environ, "UV_NO_CONFIG": "1"}
        )
        if result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, command, result.stdout, result.stderr)
        # uv names the temporary files in `# via` annotations: the input was pyproject.toml, and
        # the constraints (the sections' joint resolution) only fix versions, so they go unnamed.
        text = result.stdout.replace(f"-r {source}", "pyproject.toml")
        return re.sub(r"^(\s*# via )(.*)$", _without_constraints, text, flags=re.M)


def _without_constraints(via: re.Match[str]) -> str:
    return via[1] + ", ".join(name for name in via[2].split(", ") if not name.startswith("-c "))


def docker_lock(project: Mapping[str, Any], build_requires: Sequence[str]) -> str:
    body = compile_lock([*requirements(project, DOCKER_EXTRAS), *build_requires], DOCKER_TARGET)
    return (
        f"# The Docker image's dependencies, hash-pinned. Generated by `{COMMAND}` from pyproject.toml:\n"
        f"# [project] dependencies, the extras {', '.join(DOCKER_EXTRAS)}, and the build backend\n"
        f"# ([build-system] requires). Resolved for CPython 3.11 on glibc Linux (the base image);\n"
        "# every file of each release is hashed (amd64 and arm64 alike). Do not edit: change\n"
        f"# pyproject.toml, then run `{COMMAND}`.\n\n" + body
    )


def lambda_lock(project: Mapping[str, Any]) -> str:
    wanted = {section: requirements(project, [extra] if extra else [], core=extra is None)
              for section, extra in LAMBDA_SECTIONS.items()}  # fmt: skip
    everything = [r for section in wanted.values() for r in section]
    with tempfile.TemporaryDirectory(prefix="rotator-lock-") as tmp:
        together = Path(tmp) / "together.txt"  # one resolution: the sections' versions agree
        together.write_text(compile_lock(everything, LAMBDA_TARGET, hashes=False), encoding="utf-8")
        core = compile_lock(wanted["core"], LAMBDA_TARGET, constraints=together)
        blocks = {"core": core}
        owned = {name: "core" for name in pins(core)}
        for section in LAMBDA_SECTIONS:
            if section == "core":
                continue
            text = compile_lock([*wanted["core"], *wanted[section]], LAMBDA_TARGET, constraints=together,
                                omit=sorted(n for n, s in owned.items() if s == "core"))  # fmt: skip
            for name in pins(text):
                if name in owned:
                    raise LockError(
                        f"{name} is needed by both the {owned[name]} and the {section} sections of {LAMBDA_LOCK}; "
                        "build_zip.py installs sections side by side, so move it: add it to [project] dependencies "
                        "or make one section include the other"
                    )
                owned[name] = section
            blocks[section] = text
    header = f"""\
# Third-party packages of rotator's AWS Lambda path, hash-pinned: the complete dependency closure
# (build_zip.py installs with --no-deps --require-hashes, so nothing unpinned sneaks in).
# Generated by `{COMMAND}` from pyproject.toml; do not edit: change pyproject.toml, then run it.
#
# build_zip.py installs one or more `# [section]` blocks of this file:
#   [core]   always: [project] dependencies (pydantic, the policy model of rotator/)
#   [http]   by default (the http extra); --without-http leaves it out (only the influxctl issuers work then)
#   [boto3]  only with --with-boto3 (the aws extra); by default the Lambda runtime's own boto3 is used
# pip ignores the section markers, so `pip install -r requirements.txt` installs everything.
#
# Resolved for the Lambda platform build_zip.py targets: manylinux2014, CPython 3.11 (the oldest
# runtime it offers). Every file of each release is hashed, so the compiled wheels (pydantic-core)
# of python3.11-3.13 on x86_64 and arm64 are all covered.
"""
    return header + "".join(f"\n# [{section}]\n{text}" for section, text in blocks.items())


def write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.write_text(text, encoding="utf-8")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument(
        "--lowest", action="store_true", help="print constraints pinning each direct dependency to its lower bound"
    )
    parser.add_argument("--pyproject", type=Path, default=PYPROJECT, help="default: %(default)s")
    args = parser.parse_args(argv)
    try:
        project = load_project(args.pyproject)
        if args.lowest:
            print(f"# The lowest versions pyproject.toml allows for its direct dependencies ({COMMAND} --lowest).")
            print("\n".join(lowest_constraints(project)))
            return 0
        build_requires = tomllib.loads(args.pyproject.read_text(encoding="utf-8"))["build-system"]["requires"]
        for path, text in ((DOCKER_LOCK, docker_lock(project, build_requires)), (LAMBDA_LOCK, lambda_lock(project))):
            print(f"{path.relative_to(ROOT)}: {'updated' if write_if_changed(path, text) else 'unchanged'}")
    except LockError as exc:
        print(f"lock: error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"lock: error: uv failed (exit {exc.returncode}):\n{exc.stderr}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
