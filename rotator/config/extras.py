"""Which ``rotator[<extra>]`` provides a module that may be missing, and the line that installs it.

The core depends on pydantic alone; every vendor SDK and the daemon's libraries come with an
extra (pyproject.toml). When one is missing, the import fails deep inside some command; the CLI
turns that ImportError into an invalid-input error (exit 2) naming the exact install line, via
:func:`missing_extra`, instead of reporting an internal error.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

__all__ = ["EXTRA_OF_MODULE", "install_hint", "install_line", "missing_extra"]

#: top-level import name -> the extra that installs it (tests/runners/test_cli_usability.py checks this
#: table against the extras of pyproject.toml, so a new dependency cannot be forgotten here)
EXTRA_OF_MODULE: dict[str, str] = {
    "apscheduler": "daemon",
    "prometheus_client": "daemon",
    "hvac": "vault",
    # (the Vault store bounds its requests through their public API; hvac brings both, boto3 urllib3 too)
    "requests": "vault",
    "urllib3": "vault",
    "boto3": "aws",
    "botocore": "aws",
    "httpx": "http",
    "psycopg": "postgres",
    "tomlkit": "profile",
    # (optional even there: rotator/config/policy.py reads with tomllib without it)
    "tomli": "daemon",
}


def missing_extra(exc: BaseException) -> str | None:
    """The extra whose absence caused ``exc`` (an ImportError), or None if it is not one of ours."""
    if not isinstance(exc, ImportError):
        return None
    name = exc.name or ""
    return EXTRA_OF_MODULE.get(name.partition(".")[0])


def install_line(extra: str) -> str:
    """The command that adds ``extra`` to the environment running rotator.

    Never a bare ``pip install 'rotator[...]'``: the name ``rotator`` on PyPI is an unrelated project, and a
    ``pip`` other than this interpreter's installs into another environment, where it fetches that project.
    This interpreter's pip keeps the rotator it has installed (the requirement is already satisfied) and adds
    only the extra's packages; without an installed rotator that declares the extra (run from a checkout
    on ``PYTHONPATH``), the line installs from the source instead.
    """
    python = shlex.quote(sys.executable or "python3")
    if _installed_with_extra(extra):
        return f"{python} -m pip install 'rotator[{extra}]'"
    source = _source_checkout()
    target = shlex.quote(f"{source}[{extra}]") if source else f"'/path/to/rotator-source[{extra}]'"
    return f"{python} -m pip install {target}"


def install_hint(exc: BaseException) -> str:
    """``install it with <python> -m pip install 'rotator[daemon]'``, or a generic line when the module is unknown."""
    extra = missing_extra(exc)
    if extra is None:
        return f"install the extra it needs, e.g. {install_line('all')}"
    return f"install it with {install_line(extra)}"


def _installed_with_extra(extra: str) -> bool:
    # imported here: only an error message needs it, and the module is imported by every command
    from importlib import metadata

    try:
        provides = metadata.distribution("rotator").metadata.get_all("Provides-Extra") or []
    except metadata.PackageNotFoundError:
        return False
    return extra in provides


def _source_checkout() -> Path | None:
    """The source tree rotator is imported from, when it is one (it holds rotator's pyproject.toml)."""
    root = Path(__file__).resolve().parents[2]
    try:
        pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return root if 'name = "rotator"' in pyproject else None
