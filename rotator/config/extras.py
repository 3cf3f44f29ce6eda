"""Which ``rotator[<extra>]`` provides a module that may be missing, and the line that installs it.

The core depends on pydantic alone; every vendor SDK and the daemon's libraries come with an
extra (pyproject.toml). When one is missing, the import fails deep inside some command; the CLI
turns that ImportError into an invalid-input error (exit 2) naming the exact install line, via
:func:`missing_extra`, instead of reporting an internal error.
"""

from __future__ import annotations

__all__ = ["EXTRA_OF_MODULE", "install_hint", "install_line", "missing_extra"]

#: top-level import name -> the extra that installs it (tests/runners/test_cli_usability.py checks this
#: table against the extras of pyproject.toml, so a new dependency cannot be forgotten here)
EXTRA_OF_MODULE: dict[str, str] = {
    "apscheduler": "daemon",
    "prometheus_client": "daemon",
    "hvac": "vault",
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
    return f"pip install 'rotator[{extra}]'"


def install_hint(exc: BaseException) -> str:
    """``install it with pip install 'rotator[daemon]'``, or a generic line when the module is unknown."""
    extra = missing_extra(exc)
    if extra is None:
        return "install the extra it needs, e.g. pip install 'rotator[all]'"
    return f"install it with {install_line(extra)}"
