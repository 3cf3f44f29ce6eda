#!/usr/bin/env python3
"""Build a Lambda layer zip holding an influxctl binary that you provide, reproducibly.

influxctl is closed source and not redistributable by rotator: download the Linux release that
matches the function's architecture (linux x86_64 or arm64) from InfluxData, then

    python deploy/aws/build_influxctl_layer.py ./influxctl              # -> deploy/aws/build/influxctl-layer.zip
    aws lambda publish-layer-version --layer-name influxctl \\
        --zip-file fileb://deploy/aws/build/influxctl-layer.zip --compatible-architectures x86_64

The layer holds one file, ``bin/influxctl`` (mode 0755): Lambda unpacks layers under ``/opt``
and ``/opt/bin`` is on the function's PATH, so the issuer's default ``influxctl = "influxctl"``
finds it. Same binary -> same bytes (fixed timestamp or ``SOURCE_DATE_EPOCH``, fixed mode).
Only the influxctl issuers need the layer; the HTTP issuers need no binary.

Refused, with the reason: a missing path, a file that is not executable, and a file that is not
a 64-bit little-endian Linux ELF executable (a macOS binary, a shell wrapper, a text file), or
one built for another architecture than ``--arch``. Exit codes: 0 built, 2 refused.
"""

from __future__ import annotations

import argparse
import os
import stat
import struct
import sys
from collections.abc import Sequence
from pathlib import Path

from build_zip import BuildError, Entry, describe, write_zip, zip_date_time

__all__ = ["ELF_MACHINES", "check_binary", "main"]

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE / "build" / "influxctl-layer.zip"
LAYER_PATH = "bin/influxctl"

#: ELF e_machine -> Lambda architecture.
ELF_MACHINES = {0x3E: "x86_64", 0xB7: "arm64"}
_ELF_MAGIC = b"\x7fELF"
_ELFCLASS64, _ELFDATA2LSB = 2, 1
_ELF_OSABIS = {0: "System V", 3: "Linux"}  # Go and glibc binaries use 0
_ET_EXEC, _ET_DYN = 2, 3
_MACHO_MAGICS = (b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xca\xfe\xba\xbe", b"\xfe\xed\xfa\xcf")
_HINT = "use the Linux influxctl release for the function's architecture, linux x86_64 or linux arm64"


def check_binary(path: Path, arch: str | None = None) -> tuple[bytes, str]:
    """The binary's bytes and its architecture; BuildError says why it cannot go in a layer."""
    if not path.exists():
        raise BuildError(f"{path} does not exist; pass the path of the influxctl binary: {_HINT}")
    if not path.is_file():
        raise BuildError(f"{path} is not a regular file; pass the influxctl binary itself")
    if not path.stat().st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
        raise BuildError(f"{path} is not executable; if it is the influxctl binary, run: chmod +x {path}")
    data = path.read_bytes()
    head = data[:64]
    if not head.startswith(_ELF_MAGIC):
        raise BuildError(f"{path} is not a Linux executable (ELF): it {_looks_like(head)}; {_HINT}")
    if len(head) < 20 or head[4] != _ELFCLASS64 or head[5] != _ELFDATA2LSB:
        raise BuildError(f"{path} is a 32-bit or big-endian ELF file; Lambda runs 64-bit x86_64 or arm64; {_HINT}")
    if head[7] not in _ELF_OSABIS:
        raise BuildError(f"{path} is an ELF file for another operating system (OS ABI {head[7]}); {_HINT}")
    e_type, e_machine = struct.unpack_from("<HH", head, 16)
    if e_type not in (_ET_EXEC, _ET_DYN):
        raise BuildError(f"{path} is an ELF object or core file, not an executable; {_HINT}")
    found = ELF_MACHINES.get(e_machine)
    if found is None:
        raise BuildError(f"{path} is built for ELF machine {e_machine:#x}, which Lambda does not run; {_HINT}")
    if arch is not None and found != arch:
        raise BuildError(f"{path} is built for {found}, not for --arch {arch}; {_HINT}")
    return data, found


def _looks_like(head: bytes) -> str:
    if head.startswith(_MACHO_MAGICS):
        return "looks like a macOS (Mach-O) binary"
    if head.startswith(b"MZ"):
        return "looks like a Windows executable"
    if head.startswith(b"#!"):
        return "is a script (#!), e.g. a wrapper; pass the binary it runs"
    return "is neither an ELF binary nor a known executable format (a text file?)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build a Lambda layer zip with bin/influxctl, reproducibly.")
    parser.add_argument("influxctl", type=Path, help="the influxctl binary (Linux, x86_64 or arm64)")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT, help="default: %(default)s")
    parser.add_argument(
        "--arch", choices=sorted(set(ELF_MACHINES.values())),
        help="refuse a binary for another architecture (the function's Architectures value)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        data, arch = check_binary(args.influxctl, args.arch)
        write_zip([Entry(LAYER_PATH, data, mode=0o755)], args.output, zip_date_time())
    except BuildError as exc:
        print(f"build_influxctl_layer: error: {exc}", file=sys.stderr)
        return 2
    print(describe(args.output))
    print(f"{LAYER_PATH} for {arch}; publish with:")
    print(
        f"  aws lambda publish-layer-version --layer-name influxctl --zip-file fileb://{os.path.relpath(args.output)} "
        f"--compatible-architectures {arch} --compatible-runtimes python3.11 python3.12 python3.13"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
