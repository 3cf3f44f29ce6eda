"""``rotator sync``: copy the current token of a policy's store into a local influxctl profile.

For hosts that run influxctl automation: a cron job or systemd timer (deploy/systemd/) keeps
``mgmt_token`` of a profile equal to what the rotating host publishes to Vault or AWS::

    rotator sync --from /etc/rotator/rotator.toml:mgmt-prod --profile default \\
                 [--config ~/.config/influxctl/config.toml] [--store NAME] [--adopt] [--dry-run] [--quiet]

``--from [POLICY_FILE:]POLICY`` names the source: a policy of a rotator policy file (default
file: ``$ROTATOR_CONFIG`` or ``./rotator.toml``, as for every other command). Its first store
that is not an influxctl profile is read, or the one named by ``--store``. The policy file
brings the store's validated settings and credential references, so the sync host needs no
other configuration; give it its own copy with a read-only credential (docs/sync.md).

``--config`` and ``--profile`` mean what they mean to influxctl: the config file (default:
influxctl's default path) and the ``[[profile]]`` name (default ``default``). The profile is
written by the ``influxctl-profile`` store (rotator/adapters/influxctl/profile.py), so the file is
edited in place, atomically, with mode 0600 and its owner kept, and nothing but that
``mgmt_token`` line changes.

Idempotent: when the profile already holds the store's current token nothing is written and
the exit code is 0. Refused (exit 1, nothing written) unless ``--adopt``: a profile whose
``mgmt_token`` rotator did not write, one written for another policy, or one holding a newer
token than the store (a stale replica must not roll the profile back). Refused always (exit 1,
nothing written): a source payload of another policy or issuer, or whose token id is not a
management token id (:func:`_check_source_token_id`). Refused always (exit 2,
before the source is read): a profile that names another cluster than the policy's
``[policy.issuer.profile]``, where influxctl would send the management token (:func:`_check_cluster`).

Exit codes as for every ``rotator`` command: 0 ok (written or already current), 1 failed,
2 invalid input (the reference, the policy file, the influxctl config file or profile, a profile
of another cluster).
The token value is never printed, logged or put in an error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rotator.core.errors import (
    BadTokenId,
    ConfigError,
    MalformedPayload,
    OwnershipError,
    PermanentError,
    RotatorError,
)
from rotator.core.one_line import one_line
from rotator.observe.cluster_keys import CLUSTER_KEYS
from rotator.runners.cli_options import common_parent, once_hint, print_error, print_policy_file_error

if TYPE_CHECKING:
    import logging

    from rotator.adapters.influxctl.profile import InfluxctlProfileStore
    from rotator.config.policy import Config, Policy, StoreBinding
    from rotator.core.contracts import AdapterContext, Store, StoreState
    from rotator.core.retry import RetryPolicy

# The policy model (pydantic), the registry and the retry helper are imported by the functions
# that use them: rotator.runners.cli imports this module to build its parser, and `rotator --help` (or
# any other command) must not pay for them (tests/runners/test_cli_startup.py).

__all__ = ["PROFILE_STORE", "SyncResult", "add_parser", "cmd_sync", "main", "parse_reference"]

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
#: The store type that writes influxctl profiles (the target; never a default source).
PROFILE_STORE = "influxctl-profile"

_HELP = "write the current token of a policy's store into a local influxctl profile (mgmt_token)"
_EPILOG = """examples:
  rotator sync --from /etc/rotator/rotator.toml:mgmt-prod --profile default
  rotator sync --from mgmt-prod --profile prod --config /srv/influx/config.toml --output json
exit codes: 0 written or already current, 1 failed (nothing written), 2 invalid input"""
_HINT_REFERENCE = "write --from POLICY_FILE:POLICY, e.g. --from /etc/rotator/rotator.toml:mgmt-prod"
_HINT_ADOPT = "check that --config/--profile name the right profile, then run once with --adopt to take it over"
_HINT_TARGET_SIDECAR = (
    "the sidecar {sidecar} describes profile {profile!r} in a way rotator cannot read (edited by hand, or by another "
    "tool?): delete the profile's entry under \"profiles\" in it (or the whole file, if it names no other profile), "
    "then run the same `rotator sync` once with --adopt"
)


@dataclass
class SyncResult:
    """What a sync did; never the token value."""

    policy: str
    source: str
    target: str
    token_id: str
    previous_token_id: str | None
    changed: bool
    dry_run: bool
    message: str

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": True}


# ------------------------------------------------------------------------------ the command line


def add_parser(subparsers: Any, common_parent: argparse.ArgumentParser) -> None:
    """Add ``sync`` to ``rotator``'s subcommands.

    The common options are taken from ``common_parent`` except its ``-c/--config`` (the policy
    file): for sync, ``--config`` is influxctl's config file, as on influxctl's own command line,
    and the policy file is part of ``--from``.
    """
    parser = subparsers.add_parser(
        "sync", help=_HELP, description=_HELP, epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for action in common_parent._actions:
        if isinstance(action, argparse._HelpAction) or {"-c", "--config"} & set(action.option_strings):
            continue
        parser._add_action(action)
    _add_arguments(parser)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="[POLICY_FILE:]POLICY",
        help="the policy whose store holds the token; policy file default: $ROTATOR_CONFIG or ./rotator.toml",
    )
    parser.add_argument("--store", help="the store of that policy to read (default: its first non-profile store)")
    parser.add_argument("--profile", default="default", help="influxctl profile to write (default: default)")
    parser.add_argument(
        "--config",
        dest="influxctl_config",
        metavar="PATH",
        help="influxctl config file (default: influxctl's, e.g. ~/.config/influxctl/config.toml)",
    )
    parser.add_argument(
        "--adopt",
        action="store_true",
        help="overwrite a mgmt_token rotator did not write (or of another policy, or newer than the store's)",
    )
    parser.add_argument("--dry-run", action="store_true", help="say what would change, write nothing")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing unless the profile changed")
    # `-c` is the policy file everywhere else; here it would be ambiguous, so it is refused with a hint.
    parser.add_argument("-c", dest="policy_file_flag", help=argparse.SUPPRESS)


def _common_parent() -> argparse.ArgumentParser:
    """The options rotator.runners.cli gives every command (minus -c/--config), for
    ``python -m rotator.runners.sync``."""
    return common_parent(config=False)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rotator.runners.sync ARGS`` = ``rotator sync ARGS``."""
    parser = argparse.ArgumentParser(
        prog="rotator sync",
        description=_HELP,
        epilog=_EPILOG,
        parents=[_common_parent()],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(parser)
    args = parser.parse_args(argv)  # bad arguments: exit 2, like rotator's own parser
    from rotator.observe.logs import setup_logging

    try:
        setup_logging(args.log_level, args.log_format, file=args.log_file)
    except RotatorError as exc:  # e.g. --log-file in a missing directory: said as rotator sync says it
        _print_error(exc)
        return EXIT_INVALID
    try:
        return cmd_sync(args)
    except KeyboardInterrupt:
        return 130


def cmd_sync(args: argparse.Namespace) -> int:
    """Run the sync; print the result (stdout) or the error and its fix (stderr); return the exit code."""
    from rotator.config.policy import PolicyFileError

    try:
        result = sync(args)
    except PolicyFileError as exc:
        print_policy_file_error(str(exc))
        return EXIT_INVALID
    except RotatorError as exc:
        _print_error(exc)
        return EXIT_INVALID if isinstance(exc, ConfigError) else EXIT_FAILED
    if getattr(args, "output", "text") == "json":
        print(json.dumps(result.to_json(), indent=2))  # (json escapes control characters itself)
    elif result.changed or not getattr(args, "quiet", False):
        print(one_line(result.message))
    return EXIT_OK


def _print_error(exc: RotatorError) -> None:
    # As rotator's own CLI prints errors (one line, tokens masked): a message quotes ids from the source
    # store's payload and the sidecar, which whoever writes them could fill with escape sequences for
    # this terminal, and --from's and --store's values, where a token may have been pasted
    print_error(str(exc), once_hint(exc.hint))


# ------------------------------------------------------------------------------ the work


def parse_reference(text: str, default_file: str | None = None) -> tuple[Path, str]:
    """``[POLICY_FILE:]POLICY`` -> (policy file, policy name). Policy names hold no ``:``."""
    file, colon, policy = text.rpartition(":")
    if not colon:
        file = default_file or os.environ.get("ROTATOR_CONFIG") or "rotator.toml"
    if not policy or not file:
        raise ConfigError(f"--from {text!r} is not [POLICY_FILE:]POLICY", hint=_HINT_REFERENCE)
    return Path(file).expanduser(), policy


def sync(args: argparse.Namespace) -> SyncResult:
    """The sync itself; raises RotatorError (ConfigError for invalid input)."""
    if getattr(args, "policy_file_flag", None):
        raise ConfigError(
            "rotator sync takes no -c: the policy file is part of --from, and --config is influxctl's config file",
            hint=_HINT_REFERENCE,
        )
    import logging

    from rotator.config.policy import load_config
    from rotator.core.clock import SystemClock
    from rotator.core.contracts import read_for_reading
    from rotator.core.retry import call_with_retry

    logger = logging.getLogger("rotator.sync")
    path, name = parse_reference(args.source, getattr(args, "config", None))  # `rotator -c FILE sync`
    config = load_config(path)
    policy = config.policy(name)
    binding = _source_binding(policy, args.store)
    retry = _retry(config)
    clock = SystemClock()

    target = _profile_store(args, policy)  # first: its checks of the arguments and the policy read nothing

    def read_target() -> StoreState:
        try:
            state: StoreState = call_with_retry(
                target.read_current, what=f"{policy.name}: read {target.location}", policy=retry, clock=clock
            )
        except MalformedPayload as exc:
            # The store's own fix names `rotator bootstrap --replace`, a command of the rotating host,
            # which never writes this host's sidecar. Not lifted by --adopt: sync stops at this read,
            # before it would publish; the entry out of the sidecar, --adopt takes over.
            fixed = MalformedPayload(
                str(exc), hint=_HINT_TARGET_SIDECAR.format(sidecar=target.sidecar_path, profile=args.profile)
            )
            fixed.state = exc.state
            raise fixed from None
        return state

    # The local file before the network: a missing or unreadable --config is named at once, not after
    # the source store's retries (it is read again below, just before the write). So is a profile of
    # another cluster: influxctl would send the policy's management token there.
    read_target()
    _check_cluster(target, policy, args.profile, path, logger)
    source = _build(binding.type, binding.settings, policy.context(clock))
    try:
        src_state: StoreState = call_with_retry(
            partial(read_for_reading, source, logger), what=f"{policy.name}: read {binding.name}", policy=retry,
            clock=clock,
        )
    except MalformedPayload as exc:
        # The same fix as for an id _check_source_token_id refuses, with this policy's name in it
        raise MalformedPayload(f"{exc}; the rotating host never publishes such a payload, so nothing was synced",
                               hint=_source_fix(policy.name)) from None
    record = src_state.record
    if record is None:
        absent = src_state.version is None
        raise PermanentError(
            f"{source.location}: holds {'no secret' if absent else 'no rotator token payload'}; nothing to sync",
            hint="publish the first token on the rotating host: "
            f"`rotator bootstrap {policy.name} --token-file FILE --token-id ID`",
        )
    if record.policy != policy.name or (record.issuer and record.issuer != policy.issuer_type):
        raise PermanentError(
            f"{source.location}: holds a token of policy {record.policy!r} ({record.issuer or 'issuer not named'}), "
            f"not of policy {policy.name!r} ({policy.issuer_type}); not syncing it",
            hint="two policies must not share a store: check the source store's path in the policy file",
        )
    _check_source_token_id(record.token_id, source.location, policy.name)
    if not src_state.managed:
        logger.warning("%s: the secret has no managed-by=rotator marker; syncing its token anyway", source.location)
    if record.expires_at is not None and record.expires_at <= clock.now():
        logger.warning("%s: token %s expired at %s: is rotation failing?", source.location, record.token_id,
                       record.expires_at.isoformat())  # fmt: skip

    dst_state = read_target()
    current = dst_state.record
    result = SyncResult(
        policy=policy.name,
        source=source.location,
        target=target.location,
        token_id=record.token_id,
        previous_token_id=current.token_id if current else None,
        changed=False,
        dry_run=bool(args.dry_run),
        message="",
    )
    if current is not None and current.token_id == record.token_id and current.value == record.value:
        result.message = f"{target.location}: already current (token {record.token_id})"
        logger.debug("%s", result.message)
        return result
    if not args.adopt:
        _check_takeover(dst_state, record.policy, record.created_at, target.location)
    was = current.token_id if current else ("an unmanaged value" if dst_state.version else "no mgmt_token")
    if args.dry_run:
        result.message = f"{target.location}: would write token {record.token_id} (holds {was}); dry run"
        return result

    def publish() -> str:
        # Again before every try: the source read and a retry's wait give another writer time to
        # point the profile elsewhere (a TransientError of the store's is such a writer at work).
        _check_cluster(target, policy, args.profile, path, logger)
        return target.publish(record, dst_state.version)

    call_with_retry(publish, what=f"{policy.name}: write {target.location}", policy=retry, clock=clock)
    result.changed = True
    result.message = f"{target.location}: wrote token {record.token_id} from {source.location} (was {was})"
    return result


def _check_source_token_id(token_id: str, location: str, policy: str) -> None:
    """PermanentError (exit 1, nothing written) unless ``token_id`` is a management token id (a UUID).

    The id comes from the source store's payload, which whoever can write that path or secret
    controls; it is printed, and written into the sidecar, where the rotating host would not put it."""
    from rotator.adapters.influxctl.common import check_token_id

    try:
        check_token_id(token_id, "management token")
    except BadTokenId as exc:
        raise PermanentError(
            f"{location}: the payload's {exc}; the rotating host never publishes such an id, so nothing was synced",
            hint=_source_fix(policy),
        ) from None


def _source_fix(policy: str) -> str:
    return ("check who wrote the source store's secret, then write a good token over it on the rotating host: "
            f"`rotator bootstrap {policy} --replace --reason TEXT --token-file FILE --token-id ID` "
            "(docs/operations.md)")


def _check_takeover(state: StoreState, policy: str, created_at: datetime, location: str) -> None:
    """Refuse to overwrite what is not ours to overwrite (OwnershipError, exit 1)."""
    current = state.record
    if state.version is not None and not state.managed:
        raise OwnershipError(f"{location}: holds a mgmt_token that rotator did not write", hint=_HINT_ADOPT)
    if current is None:
        return
    if current.policy != policy:
        raise OwnershipError(
            f"{location}: holds token {current.token_id} of policy {current.policy!r}, not of {policy!r}",
            hint=_HINT_ADOPT,
        )
    if current.created_at > created_at:
        raise OwnershipError(
            f"{location}: holds token {current.token_id}, created after the store's current token: "
            "is the store a stale replica?",
            hint="check the source store; --adopt writes the older token anyway",
        )


#: influxctl's port when a profile names none (its sample config: `# port = "443"`). The issuer's
#: own profile leaves ``port`` out then too (rotator/adapters/influxctl/common.py: render_profile).
_DEFAULT_PORT = 443


def _check_cluster(target: InfluxctlProfileStore, policy: Policy, profile: str, policy_file: Path,
                   logger: logging.Logger) -> None:  # fmt: skip
    """ConfigError (exit 2, nothing written) if ``profile`` names another cluster than the policy's issuer.

    sync copies a management token into a profile, and influxctl sends that token wherever the
    profile points: a mistyped --profile (or a unit copied from another host) would hand the
    production token to another cluster. Which profile it writes is the command line's choice, so
    it is checked against what the policy file says of the cluster, ``[policy.issuer.profile]``:
    ``product`` and the keys that name the cluster for that product
    (:data:`rotator.observe.cluster_keys.CLUSTER_KEYS`).
    Compared as influxctl means them: host names and ids without regard to case (a host's final
    dot and an IPv6 address's brackets aside), a port as a number, a port left out as 443, an
    empty value as none. ``--adopt`` does not bypass this: it is about whose token the profile
    holds, not where the profile sends it.
    """
    settings = getattr(policy.issuer_settings, "profile", None)
    if settings is None or not isinstance(getattr(settings, "product", None), str):
        # Not reached while sync accepts only influxctl-management policies (issuer_problem), whose
        # settings always have a profile; an issuer added to them without one cannot be compared.
        logger.warning("%s: policy %r (%s) has no [policy.issuer.profile]: which cluster profile %r names "
                       "is not checked", target.location, policy.name, policy.issuer_type, profile)  # fmt: skip
        return
    wanted = {key: getattr(settings, key, None) for key in ("product", *CLUSTER_KEYS.get(settings.product, ()))}
    profiles = target.connections()
    differences = _cluster_differences(wanted, profiles.get(profile, {}))
    if not differences:
        return
    said = "; ".join(f"{key} is {_shown(have, key)} in the profile, {_shown(want, key)} in [policy.issuer.profile]"
                     for key, want, have in differences)  # fmt: skip
    matching = [name for name, keys in profiles.items() if not _cluster_differences(wanted, keys)]
    right = (f"--profile {' or --profile '.join(matching)} names that cluster in this file" if matching
             else "no profile of this file names that cluster: point --config at the right file")  # fmt: skip
    raise ConfigError(
        f"{target.location}: profile {profile!r} is not the cluster of policy {policy.name!r}: {said}; "
        "influxctl would send the policy's management token there, so nothing was written",
        hint=f"{right}. If this profile reaches the same cluster under another name, write the profile's values "
        f"into [policy.issuer.profile] of {policy_file} (the sync host's copy; sync never runs the issuer)",
    )


def _cluster_differences(wanted: dict[str, Any], have: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, the policy's value, the profile's value) for each key of ``wanted`` the profile disagrees on."""
    return [(key, want, have.get(key)) for key, want in wanted.items()
            if _normal(key, want) != _normal(key, have.get(key))]  # fmt: skip


def _normal(key: str, value: Any) -> object:
    if value is None or value == "":
        return _DEFAULT_PORT if key == "port" else None
    if key == "port":
        text = str(value).strip()
        return int(text) if text.isascii() and text.isdigit() else text  # influxctl's config: port = "443"
    # Spelled as the engine spells an issuer's and a profile store's target (rotator.core.contracts), so
    # that sync and `rotator rotate` agree on what one cluster is: an IP address's or a Unicode name's other
    # spellings, and a UUID's, are the same place
    from rotator.core.contracts import target_host_port, target_id

    if key == "host":
        return target_host_port(str(value), 0).rsplit(":", 1)[0]
    if key in ("account_id", "cluster_id"):
        return target_id(str(value))
    return str(value).strip().lower()


def _shown(value: Any, key: str) -> str:
    if value is None or value == "":
        return f"not set (so {_DEFAULT_PORT})" if key == "port" else "not set"
    return repr(value)


def _source_binding(policy: Policy, wanted: str | None) -> StoreBinding:
    names = ", ".join(f"{b.name} ({b.type})" for b in policy.stores)
    if wanted is not None:
        for binding in policy.stores:
            if binding.name == wanted:
                return binding
        raise ConfigError(f"policy {policy.name!r} has no store named {wanted!r}", hint=f"its stores: {names}")
    for binding in policy.stores:
        if binding.type != PROFILE_STORE:
            return binding
    raise ConfigError(
        f"policy {policy.name!r} has only {PROFILE_STORE} stores: nothing to sync from",
        hint=f"name the source with --store (its stores: {names})",
    )


def _profile_store(args: argparse.Namespace, policy: Policy) -> InfluxctlProfileStore:
    from pydantic import ValidationError

    from rotator.config import registry
    from rotator.config.adapter_settings import validate_settings
    from rotator.core.contracts import AdapterContext

    cls = registry.load("store", PROFILE_STORE)  # the core imports no adapter (nor tomlkit) itself
    raw = {"profile": args.profile}
    if args.influxctl_config:
        raw["config"] = args.influxctl_config
    try:
        settings = validate_settings(cls.settings_model, raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'config' if e['loc'][0] == 'config' else e['loc'][0]}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise ConfigError(problems, hint="see `rotator sync --help`") from None
    # The policy's issuer decides, not the payload's `issuer` (a payload may leave it out, and the
    # store's own check skips an empty one): a database token never goes into mgmt_token.
    problem = settings.issuer_problem(policy.issuer_type)
    if problem is not None:
        raise ConfigError(f"policy {policy.name!r} ({policy.issuer_type}): {problem}",
                          hint="sync copies a management token into an influxctl profile's mgmt_token: name a policy "
                          "whose issuer is influxctl-management")
    # Relative paths on the command line are relative to the working directory.
    store = _build(PROFILE_STORE, settings, AdapterContext(policy=policy.name, base_dir=Path.cwd()))
    return cast("InfluxctlProfileStore", store)  # the adapter registered as PROFILE_STORE


def _build(kind: str, settings: Any, ctx: AdapterContext) -> Store:
    from rotator.config import registry

    cls = registry.load("store", kind)
    store: Store = cls.from_config(settings, ctx)
    return store


def _retry(config: Config) -> RetryPolicy:
    from rotator.core.retry import RetryPolicy

    r = config.settings.retry
    return RetryPolicy(r.attempts, r.base_delay.total_seconds(), r.max_delay.total_seconds())


if __name__ == "__main__":
    sys.exit(main())
