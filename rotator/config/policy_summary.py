"""What `rotator status` and `rotator plan` need of a policy file, cached so that they start without pydantic.

Validating a policy file imports pydantic and every adapter's settings model: most of the start-up
of `rotator status` (issue 12). Status shows per policy only its name, whether it is enabled, its
schedule and window, its max age (or lifetime), and it reads the journal the file names. After a
full validation (`status`, `plan`, `validate`) the command line writes those values and the
``journal`` setting (never an adapter setting, a credential reference or any other value of the
file) to a small JSON file; the next `status` or `plan` on the same file reads them back with the
standard library only. The cache is a cache:

- **Keyed by everything the validated values depend on**: the SHA-256 of the policy file's bytes,
  its location (its directory with symlinks resolved; the journal setting is resolved against it
  when status runs, as without the cache), rotator's version, the Python version, the size and
  modification time of rotator's validation modules, and the modification time of the
  installed-packages directories (installing, upgrading or removing a distribution, and so an
  adapter, changes them). Validation reads no
  environment variable and no file but the policy file (``{ env = ... }`` and ``{ file = ... }``
  references are resolved when an adapter uses them, never by validation or by status), so
  nothing else enters the key. Any difference is a miss.
- **A miss is never an error**: an absent, unreadable, corrupt, foreign (another user's, group- or
  world-writable, another format) or stale cache is ignored; the command then validates the file
  fully, with the same messages as without a cache, and writes a fresh one.
- **Display only**: it feeds `status` and `plan`. Every command that acts (rotate, recover,
  revoke-expired, bootstrap, the daemon, ...) validates the policy file itself.
- **Where**: ``$ROTATOR_CACHE_DIR`` if set (the empty string turns the cache off), otherwise
  ``$XDG_CACHE_HOME/rotator`` or ``~/.cache/rotator``; one file per policy file
  (``status-<hash of its path>.json``), written atomically (a temporary file renamed), mode 0600 in
  a 0700 directory.

docs/performance.md and docs/operations.md describe it for users. This module imports neither
pydantic nor rotator's policy model; :func:`write_cache` is given an already validated Config.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from functools import lru_cache
from hashlib import sha256
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING, Any, NamedTuple

import rotator
from rotator.config.policy_source import read_policy_file
from rotator.core.errors import ConfigError

if TYPE_CHECKING:
    from rotator.config.policy import Config
    from rotator.config.schedule import Schedule

__all__ = [
    "CACHE_ENV",
    "FORMAT",
    "ConfigSummary",
    "STALE_AFTER_S",
    "PolicySummary",
    "cache_dir",
    "cache_file",
    "read_cache",
    "source_key",
    "summarize",
    "write_cache",
]

FORMAT = "rotator-status-cache/1"
#: A directory for the cache; the empty string turns it off.
CACHE_ENV = "ROTATOR_CACHE_DIR"
#: rotator's modules whose code decides what a policy file validates into (their size and mtime enter the key)
_CODE = ("policy.py", "policy_types.py", "schedule.py", "durations.py", "adapter_settings.py", "registry.py",
         "inline_secrets.py", "policy_summary.py")  # fmt: skip
#: Larger is not a summary this module wrote (a policy file of thousands of policies writes ~1 MB).
_MAX_BYTES = 16 * 1024 * 1024


class PolicySummary(NamedTuple):
    """A validated policy as status shows it: what :func:`rotator.core.due.decide` and the status row read."""

    name: str
    enabled: bool
    #: the schedule and window as validated (:attr:`rotator.config.policy_types.Policy.schedule_text`)
    schedule_text: str
    window_text: str | None
    lifetime: timedelta
    max_age: timedelta | None

    @property
    def schedule(self) -> Schedule:
        return _parsed_schedule(self.schedule_text, self.window_text)


class ConfigSummary(NamedTuple):
    """What status needs of a policy file: its policies and its journal."""

    #: the policy file, as given (relative paths in it resolve against its directory)
    path: Path
    #: the ``[rotator] journal`` setting as validated: a path or a URL
    journal: str
    policies: tuple[PolicySummary, ...]

    def journal_url(self) -> str:
        """As :meth:`rotator.config.policy.Config.journal_url`: resolved now, as every command resolves
        it (a symlinked journal that was pointed elsewhere since the summary was written is followed)."""
        if "://" in self.journal:
            return self.journal
        path = Path(self.journal)
        return "sqlite://" + str(path if path.is_absolute() else (self.path.parent / path).resolve())

    def policy(self, name: str) -> PolicySummary:
        """The policy ``name``; the same ConfigError as :meth:`rotator.config.policy.Config.policy`."""
        for policy in self.policies:
            if policy.name == name:
                return policy
        known = ", ".join(p.name for p in self.policies) or "(none)"
        raise ConfigError(f"{self.path}: no policy named {name!r}", hint=f"known policies: {known}")


@lru_cache(maxsize=256)
def _parsed_schedule(text: str, window: str | None) -> Schedule:
    from rotator.config.schedule import parse_schedule

    return parse_schedule(text, window)


def summarize(config: Config) -> ConfigSummary:
    """The summary of a validated policy file."""
    policies = tuple(PolicySummary(p.name, p.enabled, p.schedule_text, p.window_text, p.lifetime, p.max_age)
                     for p in config.policies)  # fmt: skip
    return ConfigSummary(config.path, config.settings.journal, policies)


# -- the key ----------------------------------------------------------------------------------------


def _location(policy_file: Path) -> str:
    """The policy file's directory with symlinks resolved, and its name: what a relative journal
    path (and every relative path of the file) resolves against."""
    return os.path.join(os.path.realpath(policy_file.parent), policy_file.name)


def _mtime(path: str) -> list[Any]:
    try:
        st = os.stat(path)
    except OSError:
        return [path, None]
    return [path, st.st_mtime_ns, st.st_size]


def _package_dirs() -> list[str]:
    """The installed-packages directories on ``sys.path`` (site-packages, dist-packages)."""
    return [p for p in sys.path if p and os.path.basename(p) in ("site-packages", "dist-packages")]


def source_key(policy_file: Path, raw: bytes) -> dict[str, Any]:
    """What the validated summary of the file at ``policy_file`` holding ``raw`` depends on."""
    code = os.path.dirname(os.path.abspath(__file__))
    return {
        "policy_file": _location(policy_file),
        "sha256": sha256(raw).hexdigest(),
        "rotator": rotator.__version__,
        "python": list(sys.version_info[:3]),
        "code": [_mtime(os.path.join(code, name)) for name in _CODE],
        "packages": [_mtime(p) for p in _package_dirs()],
    }


# -- where ------------------------------------------------------------------------------------------


def cache_dir() -> Path | None:
    """The cache directory, or None when the cache is off (``ROTATOR_CACHE_DIR=""``) or there is no home."""
    configured = os.environ.get(CACHE_ENV)
    if configured is not None:
        return Path(configured) if configured else None
    base = os.environ.get("XDG_CACHE_HOME")
    if not base or not os.path.isabs(base):
        home = os.path.expanduser("~")
        if home == "~" or not os.path.isabs(home):
            return None
        base = os.path.join(home, ".cache")
    return Path(base, "rotator")


def cache_file(policy_file: Path) -> Path | None:
    """The cache file of ``policy_file`` (one per location), or None when the cache is off."""
    folder = cache_dir()
    if folder is None:
        return None
    name = sha256(_location(policy_file).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return folder / f"status-{name}.json"


# -- reading ----------------------------------------------------------------------------------------


def read_cache(policy_file: Path) -> ConfigSummary | None:
    """The cached summary of ``policy_file`` if one matches its current bytes and environment; else None.

    Never raises for the cache's sake: anything wrong with it is a miss. A policy file that cannot
    be read is a miss too (the full load then reports it as it always did).
    """
    try:
        target = cache_file(policy_file)
        if target is None:
            return None
        text = _read_own(target)
        if text is None:
            return None
        raw = read_policy_file(policy_file)
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            return None
        if data.get("key") != source_key(policy_file, raw):
            return None
        return _decode(policy_file, data.get("config"))
    except (OSError, ConfigError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None


def _read_own(target: Path) -> str | None:
    """The file's text if it is a regular file of this user that no one else may write; else None."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(target, flags)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not S_ISREG(st.st_mode) or st.st_size > _MAX_BYTES or st.st_mode & 0o022:
            return None
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            return None
        try:
            return f.read(_MAX_BYTES + 1).decode("utf-8")
        except UnicodeDecodeError:
            return None


def _delta(value: Any) -> timedelta:
    days, seconds, micro = value
    if not all(type(v) is int for v in (days, seconds, micro)):
        raise TypeError("not a duration")
    out = timedelta(days=days, seconds=seconds, microseconds=micro)
    if out <= timedelta(0):
        raise ValueError("not a positive duration")
    return out


def _decode(policy_file: Path, config: Any) -> ConfigSummary | None:
    if not isinstance(config, dict) or not isinstance(config.get("journal"), str):
        return None
    if not config["journal"].strip() or "\x00" in config["journal"]:  # what validation refuses
        return None
    raw_policies = config.get("policies")
    if not isinstance(raw_policies, list):
        return None
    policies = []
    for p in raw_policies:
        if not isinstance(p, dict) or set(p) != _FIELDS:
            return None
        name, enabled, schedule, window = p["name"], p["enabled"], p["schedule"], p["window"]
        if not (isinstance(name, str) and name and type(enabled) is bool and isinstance(schedule, str)
                and (window is None or isinstance(window, str))):  # fmt: skip
            return None
        max_age = None if p["max_age"] is None else _delta(p["max_age"])
        summary = PolicySummary(name, enabled, schedule, window, _delta(p["lifetime"]), max_age)
        summary.schedule  # noqa: B018 - a schedule that does not parse is a corrupt cache, not a status error
        policies.append(summary)
    if len({p.name for p in policies}) != len(policies):
        return None
    return ConfigSummary(policy_file, config["journal"], tuple(policies))


# -- writing ----------------------------------------------------------------------------------------

_FIELDS = frozenset({"name", "enabled", "schedule", "window", "lifetime", "max_age"})


def _encode_delta(value: timedelta) -> list[int]:
    return [value.days, value.seconds, value.microseconds]


def _encode(summary: ConfigSummary) -> dict[str, Any]:
    return {
        "journal": summary.journal,
        "policies": [{"name": p.name, "enabled": p.enabled, "schedule": p.schedule_text, "window": p.window_text,
                      "lifetime": _encode_delta(p.lifetime),
                      "max_age": _encode_delta(p.max_age) if p.max_age is not None else None}
                     for p in summary.policies],
    }  # fmt: skip


def write_cache(policy_file: Path, raw: bytes, config: Config) -> Path | None:
    """Record the summary of ``config``, which was validated from ``raw``, the bytes of ``policy_file``.

    Nothing is written when the cache is off, when the file changed since ``raw`` was read, or when
    an adapter was registered in-process (rotator.config.registry.force_register: tests, plugins
    under development), which another process would not see. Never raises: the cache is optional.
    Returns the cache file written, if any.
    """
    try:
        target = cache_file(policy_file)
        if target is None or _forced_adapters() or policy_file.read_bytes() != raw:
            return None
        key = source_key(policy_file, raw)
        data = {"format": FORMAT, "key": key, "config": _encode(summarize(config))}
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        existing = _read_own(target)
        if existing == text:
            return target
        import tempfile  # only when writing: it imports shutil and random

        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _prune(target.parent, keep=target)
        fd, tmp = tempfile.mkstemp(prefix=".status-", suffix=".tmp", dir=target.parent)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, target)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return target
    except (OSError, ValueError, UnicodeError):
        return None


#: A summary not rewritten for this long is deleted when another one is written (a policy file that
#: was removed, a test's temporary one); one still in use costs one validation to write again.
STALE_AFTER_S = 30 * 86400


def _prune(folder: Path, keep: Path) -> None:
    """Delete the summaries (and leftover temporary files) of ``folder`` older than :data:`STALE_AFTER_S`."""
    import time

    horizon = time.time() - STALE_AFTER_S
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            if not (name.startswith("status-") and name.endswith(".json")) and not (
                    name.startswith(".status-") and name.endswith(".tmp")):  # fmt: skip
                continue
            try:
                if entry.path != str(keep) and entry.is_file(follow_symlinks=False) and (
                        entry.stat(follow_symlinks=False).st_mtime < horizon):  # fmt: skip
                    os.unlink(entry.path)
            except OSError:
                continue


def _forced_adapters() -> bool:
    registry = sys.modules.get("rotator.config.registry")
    return bool(getattr(registry, "_forced", None))


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

