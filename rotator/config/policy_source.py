"""A policy file's bytes: read only from a regular file of sensible size, else a clear error.

Light on purpose (no pydantic): `rotator status` reads the file through it on its fast path
(rotator/config/policy_summary.py), and the daemon hashes it at every watch.
"""

from __future__ import annotations

import os
from pathlib import Path
from stat import S_ISDIR, S_ISREG

from rotator.core.errors import ConfigError

__all__ = ["MAX_POLICY_BYTES", "read_policy_file"]

#: far above any real policy file (10,000 policies take ~3 MB), far below what would hurt to read
MAX_POLICY_BYTES = 16 * 1024 * 1024

_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def read_policy_file(path: Path) -> bytes:
    """The file's bytes; ConfigError (what, where, how to fix) for one that is missing, unreadable,
    not a regular file (a FIFO would block, a device would never end) or larger than
    :data:`MAX_POLICY_BYTES`. Opened without blocking, so that a FIFO is refused, not waited on."""
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        raise ConfigError(f"cannot read policy file {path}: {exc.strerror or exc}", hint=_hint(exc)) from None
    try:
        st = os.fstat(fd)
        if not S_ISREG(st.st_mode):
            kind = "a directory" if S_ISDIR(st.st_mode) else "not a regular file"
            raise ConfigError(f"policy file {path} is {kind}",
                              hint="pass -c (or $ROTATOR_CONFIG) the path of the TOML policy file itself")
        chunks: list[bytes] = []
        total = 0
        while st.st_size <= MAX_POLICY_BYTES and total <= MAX_POLICY_BYTES and (chunk := os.read(fd, 1 << 20)):
            chunks.append(chunk)
            total += len(chunk)
        if st.st_size > MAX_POLICY_BYTES or total > MAX_POLICY_BYTES:
            raise ConfigError(f"policy file {path} is larger than {MAX_POLICY_BYTES // (1024 * 1024)} MiB, "
                              "far more than any policy file holds",
                              hint="check that -c (or $ROTATOR_CONFIG) names the policy file")
        return b"".join(chunks)
    except OSError as exc:
        raise ConfigError(f"cannot read policy file {path}: {exc.strerror or exc}", hint=_hint(exc)) from None
    finally:
        os.close(fd)


def _hint(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return ("check the path; without -c, rotator reads the file $ROTATOR_CONFIG names, else ./rotator.toml "
                "in the directory it runs in")
    if isinstance(exc, PermissionError):
        return "give the user rotator runs as read access to the file (and search access to its directories)"
    return "check the path"
