#!/usr/bin/env python3
"""Build rotator's AWS Lambda deployment zip, reproducibly: same inputs, same bytes.

What goes in:

- ``rotator/`` (the core and ``rotator/adapters/``) minus the modules that are not on the Lambda path
  (the Vault store, the OpenBao dev helper, the influxctl-profile store, the demo);
- ``rotator-<version>.dist-info/`` with the ``rotator.issuers`` / ``rotator.stores`` entry
  points of ``pyproject.toml`` (only those whose module is in the zip): the registry finds
  adapters through entry points, and the Lambda has no installed ``rotator`` distribution;
- the third-party packages of ``requirements.txt`` next to this script (the lock file that
  ``python deploy/lock.py`` makes with uv from pyproject.toml: pinned, hashed, the whole closure),
  installed by pip with ``--require-hashes --no-deps`` for the Lambda's Python version and
  architecture (``--no-compile``); boto3 is left to the Lambda runtime unless ``--with-boto3``;
- optionally a policy file, stored as ``rotator.toml`` at the zip root (the handler's default
  ``ROTATOR_CONFIG``), and its bundle ``rotator.bundle.json``: the policy file validated by the
  full loader and compiled so that a cold start needs no pydantic (rotator/config/policy_bundle.py;
  this needs rotator installed in the Python that runs this script: pip install -e '.[aws]'). A
  policy whose issuer or store adapter the zip leaves out (the Vault store, the influxctl-profile
  store) is refused: the function loads every policy of its file, and would fail for every secret.
  An adapter of another distribution (an entry-point plugin) that is not in the zip gets a warning:
  a Lambda layer (/opt/python) must supply it. A ``{ file = ... }`` credential anywhere but in a
  layer (/opt) or /tmp is refused: a relative one is /var/task/..., and the zip holds no credential;
- with ``--compile`` only, bytecode: hash-based unchecked ``.pyc`` files (PEP 552, no timestamp),
  made by the target Python itself. Without it no ``__pycache__``/``*.pyc`` goes in, and as
  ``/var/task`` is read-only, every cold start compiles rotator and pydantic from source.

Reproducible: entries sorted by name, every timestamp 1980-01-01 00:00 (or ``SOURCE_DATE_EPOCH``),
every mode 0644, no console scripts, no stray bytecode, deflate level 9. The bytes depend on the
inputs (source files, requirements, policy file, options) and on the Python (its zlib; with
``--compile`` its version) that runs this script.

    python deploy/aws/build_zip.py                                # -> deploy/aws/build/rotator-lambda.zip
    python deploy/aws/build_zip.py --policy-file lambda.toml --arch arm64 --python-version 3.12
    python3.12 deploy/aws/build_zip.py --compile                    # with bytecode for python3.12
    python deploy/aws/build_zip.py --no-deps-install -o /tmp/r.zip  # no pip, no network (tests)

Exit codes: 0 built; 2 bad input (the message says what and how to fix it); 1 pip failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import posixpath
import re
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BuildError",
    "Entry",
    "build",
    "check_adapters",
    "describe",
    "main",
    "requirement_sections",
    "write_zip",
    "zip_date_time",
]

HERE = Path(__file__).resolve().parent
DEFAULT_ROOT = HERE.parents[1]
DEFAULT_OUTPUT = HERE / "build" / "rotator-lambda.zip"
REQUIREMENTS = HERE / "requirements.txt"

PACKAGES = ("rotator",)
#: The handler and the store: a zip without them is not a rotation function.
REQUIRED = ("rotator/runners/aws_lambda.py", "rotator/adapters/aws/secretsmanager.py")
#: Off the Lambda path: they only add weight, and the Vault store would fail to import (no hvac).
EXCLUDED = frozenset(
    {
        "rotator/runners/demo.py",
        "rotator/adapters/vault/kv2.py",
        "rotator/adapters/vault/auth.py",
        "rotator/adapters/influxctl/profile.py",
    }
)
#: The demo's influxctl simulator and OpenBao helper, and the adapter authors' contract-test kit:
#: never on a production path.
EXCLUDED_DIRS = ("rotator/sandbox/", "rotator/testing/")
PACKAGE_DATA = frozenset({"py.typed"})
ENTRY_POINT_GROUPS = ("rotator.issuers", "rotator.stores")
POLICY_ARCNAME = "rotator.toml"
BUNDLE_ARCNAME = "rotator.bundle.json"
LAMBDA_TASK_ROOT = "/var/task"  # where Lambda unpacks the zip

PYTHON_VERSIONS = ("3.11", "3.12", "3.13")
#: Lambda architecture -> manylinux machine. manylinux2014 (glibc 2.17) runs on both Amazon
#: Linux 2 (python3.11) and Amazon Linux 2023 (python3.12+); newer tags might not.
ARCHITECTURES = {"x86_64": "x86_64", "arm64": "aarch64"}
DEFAULT_SECTIONS = ("core", "http")

FILE_MODE = 0o644
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024  # Lambda: zip uploaded directly (not through S3)
UNZIPPED_LIMIT = 250 * 1024 * 1024  # Lambda: function + layers, unzipped

_SECTION = re.compile(r"^#\s*\[([a-z0-9_-]+)\]\s*$")
_CRON_FIELDS = 5
#: Where the function finds a file the zip does not hold: its layers (/opt) and its /tmp. A relative
#: path is the policy file's directory, /var/task, the zip's root: and the zip holds no credential.
_LAMBDA_FILE_ROOTS = ("/opt/", "/tmp/")


class BuildError(Exception):
    """A problem with the build's inputs; the message says what, where, and how to fix it."""


@dataclass(frozen=True)
class Entry:
    """One file of a zip: its name inside the zip, its bytes, its Unix mode."""

    arcname: str
    data: bytes
    mode: int = FILE_MODE


# --------------------------------------------------------------------------------------------
# Reproducible zips (also used by build_influxctl_layer.py)


def zip_date_time(environ: Mapping[str, str] = os.environ) -> tuple[int, int, int, int, int, int]:
    """The one timestamp of every entry: ``SOURCE_DATE_EPOCH`` (UTC) if set, else 1980-01-01 00:00."""
    text = environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not text:
        return ZIP_EPOCH
    if not text.isdigit():
        raise BuildError(f"SOURCE_DATE_EPOCH={text!r} is not a number of seconds since 1970; unset it or fix it")
    stamp = time.gmtime(int(text))
    if stamp.tm_year < 1980:  # the zip format starts in 1980
        return ZIP_EPOCH
    if stamp.tm_year > 2107:
        raise BuildError(f"SOURCE_DATE_EPOCH={text} is after 2107, which a zip cannot record")
    return (stamp.tm_year, stamp.tm_mon, stamp.tm_mday, stamp.tm_hour, stamp.tm_min, stamp.tm_sec)


def write_zip(entries: Iterable[Entry], output: Path, date_time: tuple[int, int, int, int, int, int]) -> None:
    """Write ``entries`` sorted by name, with fixed metadata; replace ``output`` atomically."""
    by_name: dict[str, Entry] = {}
    for entry in entries:
        if entry.arcname in by_name:
            raise BuildError(f"two files would be stored as {entry.arcname!r} in the zip")
        by_name[entry.arcname] = entry
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w") as archive:
            for name in sorted(by_name):
                info = zipfile.ZipInfo(name, date_time=date_time)
                info.create_system = 3  # Unix, so that the mode below is honoured
                info.external_attr = (0o100000 | by_name[name].mode) << 16  # regular file
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, by_name[name].data, compresslevel=9)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, output)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def describe(path: Path) -> str:
    """``<path>: <size> bytes (<MiB>), sha256 <hex>`` plus the unzipped size."""
    data = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    unzipped = sum(info.file_size for info in infos)
    return (
        f"{path}: {len(data)} bytes ({len(data) / 1048576:.2f} MiB), {len(infos)} files, "
        f"{unzipped} bytes unzipped ({unzipped / 1048576:.2f} MiB)\n"
        f"sha256 {hashlib.sha256(data).hexdigest()}"
    )


# --------------------------------------------------------------------------------------------
# rotator's own files


def source_entries(root: Path) -> list[Entry]:
    """The ``*.py`` and package data of rotator/, minus :data:`EXCLUDED`."""
    missing = [name for name in REQUIRED if not (root / name).is_file()]
    if missing:
        raise BuildError(
            f"{', '.join(missing)} not found under {root}: the Lambda handler and the Secrets Manager "
            "store must exist; build from a checkout that has them (or pass --source-root)"
        )
    entries: list[Entry] = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*")):
            relative = path.relative_to(root)
            arcname = relative.as_posix()
            skipped = arcname in EXCLUDED or arcname.startswith(EXCLUDED_DIRS)
            if "__pycache__" in relative.parts or not path.is_file() or skipped:
                continue
            if path.suffix == ".py" or path.name in PACKAGE_DATA:
                entries.append(Entry(arcname, path.read_bytes()))
    return entries


def dist_info_entries(root: Path, arcnames: Iterable[str]) -> list[Entry]:
    """``rotator-<version>.dist-info`` with the adapter entry points whose module is in the zip."""
    pyproject = root / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    except (OSError, tomllib.TOMLDecodeError, KeyError) as exc:
        raise BuildError(f"cannot read [project] from {pyproject}: {exc}") from None
    present = set(arcnames)
    groups = project.get("entry-points", {})
    lines: list[str] = []
    for group in ENTRY_POINT_GROUPS:
        kept = {
            name: target
            for name, target in groups.get(group, {}).items()
            if _module_file(target) in present or _module_file(target, package=True) in present
        }
        if kept:
            lines.append(f"[{group}]")
            lines.extend(f"{name} = {kept[name]}" for name in sorted(kept))
            lines.append("")
    name, version = project["name"], project["version"]
    dist_info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    return [
        Entry(f"{dist_info}/METADATA", metadata.encode()),
        Entry(f"{dist_info}/entry_points.txt", "\n".join(lines).encode()),
        Entry(f"{dist_info}/top_level.txt", "".join(f"{p}\n" for p in PACKAGES).encode()),
    ]


def _module_file(target: str, *, package: bool = False) -> str:
    module = target.partition(":")[0].strip().replace(".", "/")
    return f"{module}/__init__.py" if package else f"{module}.py"


def policy_entry(path: Path) -> Entry:
    """The policy file as ``rotator.toml``; refused when it is not TOML, uses a cron schedule or names a
    credential file the function cannot read."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BuildError(f"cannot read policy file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BuildError(f"policy file {path} is not valid TOML: {exc}; run `rotator validate {path}`") from None
    for where, schedule in _schedules(data):
        if isinstance(schedule, str) and _is_cron(schedule):
            raise BuildError(
                f"policy file {path}: {where} = {schedule!r} is a cron schedule, which needs APScheduler, "
                "and the Lambda zip does not bundle it. In the Lambda, Secrets Manager's ScheduleExpression "
                "decides when to rotate; write the same period as an interval or rate, e.g. "
                "schedule = 'rate(30 days)', so that token lifetimes are checked against it"
            )
    for owner, key, file in _credential_files(data):
        if isinstance(file, str) and not _lambda_can_read(file):
            where = (f"it is {posixpath.join('/var/task', file)} there (relative to the policy file, at the zip's "
                     "root), and the zip holds no credential" if not file.startswith("/") else
                     "the function has no files there: besides its zip, which holds no credential, only its "
                     "layers (/opt) and /tmp")  # fmt: skip
            raise BuildError(
                f"policy file {path}: {owner}: {key} = {{ file = {json.dumps(file)} }} is a file the Lambda "
                f"function cannot read: {where}. Take the credential from the secret itself (`self`), from "
                "another secret (`management_token_from`), or from the function's environment "
                '({ env = "NAME" })'
            )
    return Entry(POLICY_ARCNAME, raw)


def bundle_entry(policy: Entry, path: Path, source_root: Path) -> Entry:
    """The policy file's bundle, written by the rotator that goes into the zip."""
    sys.path.insert(0, str(source_root))
    try:
        from rotator.config.policy_bundle import write_bundle
        from rotator.core.errors import ConfigError
    except ImportError as exc:
        raise BuildError(
            f"validating policy file {path} needs rotator and its dependencies in this Python ({exc}); "
            "install them with pip install -e '.[aws]' (add '[http]' for the HTTP issuers)"
        ) from None
    finally:
        sys.path.remove(str(source_root))
    with tempfile.TemporaryDirectory(prefix="rotator-bundle-") as tmp:
        copy = Path(tmp) / POLICY_ARCNAME  # the name and bytes it has in the zip
        copy.write_bytes(policy.data)
        try:
            written, _ = write_bundle(copy)
        except ConfigError as exc:
            text = str(exc).replace(str(copy), str(path))
            raise BuildError(f"{text}\nfix: {exc.hint.replace(str(copy), str(path))}") from None
        return Entry(BUNDLE_ARCNAME, written.read_bytes())


def check_adapters(bundle: Entry, arcnames: Iterable[str], path: Path, *, own_only: bool = False) -> list[str]:
    """BuildError naming each policy of ``bundle`` whose issuer or store adapter is a module of rotator
    that is not among ``arcnames`` (left out: :data:`EXCLUDED`): the function builds every policy of its
    file at each invocation, so one such policy fails it for every secret. An adapter from another
    distribution that is not among them is no error, as a Lambda layer may supply it: the warnings
    returned name each such module. ``own_only``: rotator's own modules only (before pip runs)."""
    try:
        data = json.loads(bundle.data)
        targets: Mapping[str, Mapping[str, str]] = data["adapters"]
        uses = [(str(p["name"]), kind, str(entry["type"])) for p in data["policies"]
                for kind, entry in [("issuer", p["issuer"]), *(("store", s) for s in p["stores"])]]  # fmt: skip
    except (ValueError, KeyError, TypeError) as exc:
        raise BuildError(f"the bundle of policy file {path} cannot be read back ({exc!r}); rebuild it") from None
    present = set(arcnames)
    missing: list[str] = []
    elsewhere: dict[str, list[str]] = {}  # module outside rotator -> its uses
    for policy, kind, type_ in uses:
        target = targets.get(kind, {}).get(type_, "")
        module = target.partition(":")[0].strip()
        own = module.split(".")[0] in PACKAGES or not module  # no recorded module: nothing a layer could supply
        if own_only and not own:
            continue
        if _module_file(target) in present or _module_file(target, package=True) in present:
            continue
        if own:
            why = "left out of the zip: off the Lambda path" if _module_file(target) in EXCLUDED else "not in the zip"
            missing.append(f"policy {policy!r} uses {kind} adapter {type_!r} (module {module or '?'}, {why})")
        else:
            elsewhere.setdefault(module, []).append(f"{kind} adapter {type_!r} of policy {policy!r}")
    if missing:
        raise BuildError(
            f"policy file {path}: {'; '.join(missing)}. The function loads every policy of its file, so it would "
            "fail for every secret. Keep such policies in a policy file of their own for the CLI or the daemon (a "
            "policy that also publishes to Vault belongs there), and pass --policy-file a file with only the "
            "policies the function rotates (one aws-secretsmanager store each)"
        )
    return [
        f"policy file {path}: module {module} ({', '.join(found)}) is not in the zip: it must come from a Lambda "
        "layer of the function (the package and its .dist-info under python/ in the layer, which Lambda puts on "
        "sys.path as /opt/python), or be added to the zip; without it the function fails for every secret"
        for module, found in elsewhere.items()
    ]


def _is_cron(schedule: str) -> bool:
    """A 5-field cron or an AWS ``cron(...)``: the forms rotator.config.schedule hands to APScheduler."""
    text = schedule.strip()
    return text.startswith("cron(") or len(text.split()) == _CRON_FIELDS


def _lambda_can_read(file: str) -> bool:
    """Whether ``file`` is an absolute path under one of :data:`_LAMBDA_FILE_ROOTS` (``..`` resolved)."""
    return file.startswith("/") and posixpath.normpath(file).startswith(_LAMBDA_FILE_ROOTS)


def _credential_files(data: Mapping[str, Any]) -> Iterable[tuple[str, str, Any]]:
    """(policy, dotted key, path) of each ``{ file = ... }`` credential of the policies and their defaults."""
    owners: list[tuple[str, Any]] = [("defaults", data.get("defaults"))]
    policies = data.get("policy")
    if isinstance(policies, list):
        for index, policy in enumerate(policies):
            name = policy.get("name") if isinstance(policy, Mapping) else None
            owners.append((f"policy {name!r}" if isinstance(name, str) else f"policy[{index}]", policy))
    for owner, table in owners:
        for key, file in _file_refs(table, ""):
            yield owner, key, file


def _file_refs(value: Any, where: str) -> Iterable[tuple[str, Any]]:
    if isinstance(value, Mapping):
        if set(value) == {"file"}:  # a credential reference (CredentialRef); `{ env = ... }` is the other form
            yield where, value["file"]
            return
        for key, item in value.items():
            yield from _file_refs(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _file_refs(item, f"{where}[{index}]")


def _schedules(data: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    defaults = data.get("defaults")
    if isinstance(defaults, Mapping):
        yield "defaults.schedule", defaults.get("schedule")
    policies = data.get("policy")
    if isinstance(policies, list):
        for index, policy in enumerate(policies):
            if isinstance(policy, Mapping):
                yield f"policy[{index}].schedule", policy.get("schedule")


# --------------------------------------------------------------------------------------------
# Third-party packages


def requirement_sections(text: str) -> dict[str, str]:
    """Split requirements.txt at its ``# [section]`` markers: section name -> its lines."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        marker = _SECTION.match(line)
        if marker:
            current = sections.setdefault(marker.group(1), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines).strip() + "\n" for name, lines in sections.items()}


def install_dependencies(
    requirements: Path, sections: Sequence[str], python_version: str, arch: str, staging: Path
) -> None:
    """pip-install the chosen sections for the Lambda's platform into ``staging`` (needs an index)."""
    try:
        available = requirement_sections(requirements.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BuildError(f"cannot read {requirements}: {exc.strerror}") from None
    unknown = [name for name in sections if name not in available]
    if unknown:
        raise BuildError(f"{requirements} has no section(s) {unknown}; it has {sorted(available)}")
    chosen = staging.parent / "requirements.txt"
    chosen.write_text("".join(available[name] for name in sections), encoding="utf-8")
    machine = ARCHITECTURES[arch]
    command = [
        sys.executable, "-m", "pip", "install",
        "--target", str(staging),
        "--requirement", str(chosen),
        "--no-deps", "--require-hashes", "--only-binary=:all:", "--no-compile",
        "--implementation", "cp", "--python-version", python_version,
        "--platform", f"manylinux2014_{machine}", "--platform", f"manylinux_2_17_{machine}",
        "--no-input", "--disable-pip-version-check", "--no-warn-script-location", "--quiet",
    ]  # fmt: skip
    print(f"installing {', '.join(sections)} for python{python_version} {arch}: pip install -r {requirements}")
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, command)


def staged_entries(staging: Path) -> list[Entry]:
    """Everything pip put in ``staging`` except console scripts (``bin/``) and bytecode."""
    entries: list[Entry] = []
    for path in sorted(staging.rglob("*")):
        relative = path.relative_to(staging)
        if relative.parts[0] == "bin" or "__pycache__" in relative.parts or path.suffix in (".pyc", ".pyo"):
            continue
        if path.is_file():
            entries.append(Entry(relative.as_posix(), path.read_bytes()))
    clashes = sorted({e.arcname.split("/")[0] for e in entries} & {*PACKAGES, POLICY_ARCNAME, BUNDLE_ARCNAME})
    if clashes:
        raise BuildError(f"a third-party package installs top-level {clashes}, which would shadow rotator's own")
    return entries


def compiled_entries(entries: Sequence[Entry], python_version: str, tree: Path) -> list[Entry]:
    """Bytecode for every ``.py`` entry, so that cold starts need not compile (``/var/task`` is read-only).

    The ``.pyc`` files are hash-based and unchecked (PEP 552): no timestamp inside, never compared
    with their source, and their ``co_filename`` is the path under ``/var/task``. Python writes
    bytecode for its own version only, so this needs the function's Python.
    """
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if running != python_version:
        raise BuildError(
            f"--compile needs the function's Python: this is {running}, the target is {python_version}; "
            f"run build_zip.py with python{python_version} (e.g. in the SAM build image) or leave --compile out"
        )
    for entry in entries:
        if entry.arcname.endswith(".py"):
            path = tree / entry.arcname
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(entry.data)
    command = [
        sys.executable, "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash",
        "-s", str(tree), "-p", LAMBDA_TASK_ROOT, str(tree),
    ]  # fmt: skip
    if subprocess.run(command, check=False).returncode != 0:
        raise BuildError("compileall could not compile every module (see above); build without --compile")
    return [Entry(path.relative_to(tree).as_posix(), path.read_bytes()) for path in sorted(tree.rglob("*.pyc"))]


# --------------------------------------------------------------------------------------------
# The build


@dataclass(frozen=True)
class BuildOptions:
    output: Path = DEFAULT_OUTPUT
    source_root: Path = DEFAULT_ROOT
    requirements: Path = REQUIREMENTS
    policy_file: Path | None = None
    python_version: str = "3.12"
    arch: str = "x86_64"
    sections: tuple[str, ...] = DEFAULT_SECTIONS
    install_deps: bool = True
    compile: bool = False


def build(options: BuildOptions) -> Path:
    """Build the zip described by ``options``; BuildError on bad input."""
    date_time = zip_date_time()
    entries = source_entries(options.source_root)
    entries += dist_info_entries(options.source_root, (e.arcname for e in entries))
    bundle: Entry | None = None
    if options.policy_file is not None:
        policy = policy_entry(options.policy_file)
        bundle = bundle_entry(policy, options.policy_file, options.source_root)
        entries += [policy, bundle]
        # rotator's own modules now, before pip takes its time; the rest once pip has installed them
        check_adapters(bundle, (e.arcname for e in entries), options.policy_file, own_only=True)
    with tempfile.TemporaryDirectory(prefix="rotator-lambda-") as tmp:
        if options.install_deps:
            staging = Path(tmp) / "staging"
            staging.mkdir()
            install_dependencies(options.requirements, options.sections, options.python_version, options.arch, staging)
            entries += staged_entries(staging)
        if bundle is not None and options.policy_file is not None:
            for warning in check_adapters(bundle, (e.arcname for e in entries), options.policy_file):
                print(f"warning: {warning}", file=sys.stderr)
        if options.compile:
            entries += compiled_entries(entries, options.python_version, Path(tmp) / "compile")
    write_zip(entries, options.output, date_time)
    return options.output


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Build rotator's AWS Lambda deployment zip reproducibly (same inputs -> same bytes).",
    )
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT, help="default: %(default)s")
    parser.add_argument("--policy-file", type=Path, help="store this policy file as rotator.toml at the zip root")
    parser.add_argument(
        "--python-version", choices=PYTHON_VERSIONS, default="3.12",
        help="the function's Runtime (pythonX.Y) that compiled wheels are chosen for (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--arch", choices=sorted(ARCHITECTURES), default="x86_64",
        help="the function's Architectures value (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--without-http", action="store_true",
        help="leave out httpx and its dependencies (enough for the influxctl issuers only)",
    )  # fmt: skip
    parser.add_argument(
        "--with-boto3", action="store_true",
        help="bundle the pinned boto3/botocore instead of using the Lambda runtime's",
    )  # fmt: skip
    parser.add_argument(
        "--compile", action="store_true",
        help="add reproducible bytecode (unchecked-hash .pyc) for faster cold starts; needs the target Python",
    )  # fmt: skip
    parser.add_argument(
        "--no-deps-install", action="store_true",
        help="install no third-party package (no pip, no network): rotator's own files only; for tests",
    )  # fmt: skip
    parser.add_argument("--source-root", type=Path, default=DEFAULT_ROOT, help="the checkout (default: %(default)s)")
    parser.add_argument("--requirements", type=Path, default=REQUIREMENTS, help="default: %(default)s")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sections = ["core"] + ([] if args.without_http else ["http"]) + (["boto3"] if args.with_boto3 else [])
    options = BuildOptions(
        output=args.output.resolve(),
        source_root=args.source_root.resolve(),
        requirements=args.requirements,
        policy_file=args.policy_file,
        python_version=args.python_version,
        arch=args.arch,
        sections=tuple(sections),
        install_deps=not args.no_deps_install,
        compile=args.compile,
    )
    try:
        output = build(options)
    except BuildError as exc:
        print(f"build_zip: error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(
            f"build_zip: error: pip failed (exit {exc.returncode}); it needs a package index "
            "(PyPI or a mirror in pip.conf/PIP_INDEX_URL) and every wheel's hash in requirements.txt "
            "(refresh it with `python deploy/lock.py`)",
            file=sys.stderr,
        )
        return 1
    print(describe(output))
    if args.no_deps_install:
        print("note: --no-deps-install: no third-party package is inside; this zip does not run in Lambda")
    else:
        print(
            f"for Runtime python{args.python_version}, Architectures {args.arch}; "
            f"boto3 {'bundled' if args.with_boto3 else 'from the Lambda runtime'}"
        )
    size = output.stat().st_size
    if size > DIRECT_UPLOAD_LIMIT:
        print("warning: over 50 MiB: Lambda takes it only through S3 (sam deploy does that)", file=sys.stderr)
    with zipfile.ZipFile(output) as archive:
        if sum(info.file_size for info in archive.infolist()) > UNZIPPED_LIMIT:
            print("warning: over 250 MiB unzipped: Lambda will refuse it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
