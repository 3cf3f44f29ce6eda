"""The AWS Secrets Manager rotation function. ``rotator.runners.aws_lambda.handler`` calls :func:`handle`.

Secrets Manager invokes the function with ``{Step, SecretId, ClientRequestToken[, RotationToken]}``
four times per rotation, in this order, and repeats the whole sequence when a step fails:

    createSecret   revoke the tokens whose grace has passed; if the AWSPENDING version (the one
                   whose VersionId is the ClientRequestToken) has a value, stop. Otherwise refuse
                   when the secret's RotationRules rotate it less often than the token lives
                   (:meth:`_Rotation._check_schedule`), revoke
                   any token an earlier attempt minted and never stored, mint a token whose
                   description carries ``rotator:<policy>:<ClientRequestToken>``, and
                   PutSecretValue it as that AWSPENDING version (with RotationToken, if given)
    setSecret      nothing to set (the issuer minted the token); check the issuer knows it active
    testSecret     verify the pending token with the issuer, retrying while the Lambda has time
    finishSecret   check the pending token again as setSecret does (finishSecret can be invoked
                   alone), record when the superseded token may be revoked (grace after the end
                   of this invocation, by which the move has landed), check that the version is
                   still AWSPENDING, move AWSCURRENT to the new version (the old one becomes
                   AWSPREVIOUS), check the token is still active (else move AWSCURRENT back,
                   remove the record written before the move, and fail), drop AWSPENDING

Each step first checks (DescribeSecret) that rotation is enabled and the ClientRequestToken is a
version of the secret; it returns at once if that version is AWSCURRENT already and fails if it
is not AWSPENDING. Both spellings of the steps are accepted (``createSecret``, ``create_secret``).
A second event, ``{"action": "revoke-expired"[, "SecretId": ...]}`` from an EventBridge schedule,
revokes the tokens whose grace has passed and the orphans of rotations cancelled or abandoned
(:func:`_sweep_orphans`) (without ``SecretId``: every secret the policy file's stores name, once
each, under the policy the secret names, as for the steps), within the
invocation's time (:class:`_Budget`): a secret it has no time left for is reported as not
evaluated, and each run starts at another secret (:func:`_first_of`).

No journal: the secret is the state. The engine's journal exists to find, after a crash, what a
run minted and where it stands; here Secrets Manager already keeps that, durably and per secret:

- the staging labels are the run's state (AWSPENDING = candidate, AWSCURRENT = published);
- the ClientRequestToken is the run id and the idempotency key: it is the pending VersionId and
  sits in the minted token's description, so a token whose PutSecretValue never happened is
  found with ``list_tokens`` and revoked on the retry;
- Secrets Manager runs one rotation of a secret at a time (AWSPENDING), which is the lease;
- the revocations due after grace are tags of the secret, ``rotator:revoke:<token id>`` =
  ``<RFC 3339 time>`` (a Lambda has no disk that outlives it). A tag is removed once the issuer
  confirmed the revocation. A token that is AWSCURRENT or AWSPENDING is never revoked.
- a tag says *when*, never *what*, and *when* no later than rotator writes (now + grace + the time
  finishSecret's invocation had left, at most 15 minutes; a later time is brought down to that and
  reported, :func:`_bound_due_time`) and no earlier than grace
  after the creation of the version that replaced the token (an earlier time is raised to that and
  reported, :func:`_raise_due_time`): anyone with TagResource can write one. Before revoking, the
  token must pass rotator/core/revocation_rule.py against records no tag or PutSecretValue can rewrite
  (:class:`_VersionRecords`): its issuer description carries ``rotator:<policy>:<version id>``
  for a version of this secret that is not younger than the token (a new version may be given any
  id, another secret's run id too), or it is the token of the secret's oldest version whose payload
  names the policy (the one ``rotator bootstrap`` published; an adopted secret's older values are
  not). Anything else is refused and left as ``rotator:attention:<id>``.

Configuration (documented in docs/aws-lambda.md):

- ``ROTATOR_CONFIG``: the policy file (default: ``rotator.toml`` at the deployment zip's root).
  The function reads its bundle beside it (``rotator.bundle.json``, written by build_zip.py or
  ``rotator bundle``; see rotator/config/policy_bundle.py), which needs no pydantic; without a bundle
  that matches the file it validates the file itself and logs why;
- the policy: the secret's tag ``rotator:policy``, else ``ROTATOR_POLICY`` (:func:`_policy_of`).
  It must have exactly one store, of type ``aws-secretsmanager``, whose ``secret_id`` names this
  secret (name or ARN): the function publishes only to the secret it rotates, so other stores
  would fall behind; and an issuer whose mint does not revoke the token it mints with
  (policy_bundle.refuse_in_lambda: InfluxDB 3's ``kind = "operator"`` would leave a dead AWSCURRENT);
- ``ROTATOR_LOG_LEVEL`` (default INFO).

The Secrets Manager client is built from that store's settings (region, endpoint_url, role_arn,
retries) unless one is injected (the seam the tests use). The tokens the function mints carry
a 32-64 character run id (the ClientRequestToken); tokens minted by the CLI or daemon (16
characters) are never touched by its clean-up, but one policy must not be rotated both ways.
"""

from __future__ import annotations

import json
import logging
import os
import re
import reprlib
import shlex
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import botocore.exceptions

import rotator
from rotator.adapters.aws.secretsmanager import (
    CURRENT,
    HINT_OLD_SDK,
    MANAGED_BY,
    MANAGED_BY_KEY,
    PENDING,
    POLICY_KEY,
    PREVIOUS,
    AwsSecretsManagerSettings,
    AwsSecretsManagerStore,
    SecretsManagerAPI,
    SecretView,
    accepts_parameter,
    boto3_client,
    check_answer,
    check_request_id,
    check_version_list,
    client_error_code,
    describe,
    describe_answer,
    map_errors,
    quiet_sdk_wire_logs,
    read_labelled_version,
    read_stage,
    secret_id_is_valid,
)
from rotator.config import registry
from rotator.config.policy_bundle import BundleError, PolicyBundle, bundle_path, read_bundle, refuse_in_lambda
from rotator.config.policy_types import Policy
from rotator.config.timefmt import rfc3339_seconds
from rotator.core.clock import Clock, SystemClock
from rotator.core.contracts import Issuer, MintRequest, TokenInfo, TokenRecord, call_timeout_of, with_unlisted
from rotator.core.errors import (
    ConfigError,
    NeedsAttention,
    NotYetAccepted,
    OwnershipError,
    PermanentError,
    RotatorError,
    TransientError,
)
from rotator.core.retry import RetryPolicy, call_with_retry
from rotator.core.secret import REDACTOR, Secret, value_sha256

if TYPE_CHECKING:
    # Imported where a revocation is decided (finishSecret, orphans of createSecret): not at cold start.
    from rotator.core.revocation_rule import Claim

__all__ = [
    "CONFIG_ENV",
    "LOG_LEVEL_ENV",
    "POLICY_ENV",
    "POLICY_TAG",
    "REVOKE_TAG_PREFIX",
    "Checkpoint",
    "LambdaContext",
    "handle",
    "setup_lambda_logging",
]

logger = logging.getLogger("rotator.lambda")
T = TypeVar("T")

CONFIG_ENV, POLICY_ENV, LOG_LEVEL_ENV = "ROTATOR_CONFIG", "ROTATOR_POLICY", "ROTATOR_LOG_LEVEL"
POLICY_TAG = "rotator:policy"
REVOKE_TAG_PREFIX = "rotator:revoke:"
#: A revocation claim the records did not prove (rotator/core/revocation_rule.py): left for a person.
ATTENTION_TAG_PREFIX = "rotator:attention:"
#: The zip root: the directory that holds the ``rotator`` package.
DEFAULT_CONFIG = Path(rotator.__file__).resolve().parent.parent / "rotator.toml"

_STEPS = {
    "createSecret": "createSecret", "create_secret": "createSecret",
    "setSecret": "setSecret", "set_secret": "setSecret",
    "testSecret": "testSecret", "test_secret": "testSecret",
    "finishSecret": "finishSecret", "finish_secret": "finishSecret",
}  # fmt: skip
_RUN_ID = r"[A-Za-z0-9-]{32,64}"  # a ClientRequestToken; the engine's run ids are 16 characters
_TAG_KEY = r"^[\w .:/=+\-@]{1,128}\Z"  # compiled on first use (finishSecret), not at cold start
_SAFETY_MS = 10_000  # stop retrying this long before the Lambda's timeout
#: Lambda's longest function timeout: no invocation runs longer, so a call one makes (finishSecret's move
#: of AWSCURRENT, createSecret's PutSecretValue) lands within this of when it started, or never
_MAX_INVOCATION = timedelta(seconds=900)
#: Secrets Manager keeps ~100 versions without a label (and any younger than a day): a bound far
#: above that, so that a NextToken that never ends cannot loop an invocation to its timeout
_MAX_VERSION_PAGES = 100
#: The oldest version with a rotator payload is the bootstrapped token's record only while no version
#: can have been deleted: Secrets Manager removes outdated versions (no label, older than a day) once a
#: secret has more than 100, so the oldest left may be a later write (a version someone labelled to keep
#: it). At this many versions (a margin below 100) the record is no longer trusted.
BOOTSTRAP_RECORD_MAX_VERSIONS = 90
_LONG_AGO = datetime.min.replace(tzinfo=UTC)  # CreatedDate is aware; a version without one sorts first
#: RotationRules' ScheduleExpression rate() and Duration ("4h"), the forms Secrets Manager accepts
_RATE = r"^rate\(\s*([0-9]{1,5})\s+(hour|day)s?\s*\)\Z"
_DURATION = r"^([0-9]{1,3})h\Z"
_AWS_CRON_FIELDS = 6  # cron(Minutes Hours Day-of-month Month Day-of-week Year)

_HINT_CLEAR = (
    "remove the label and let Secrets Manager start over: aws secretsmanager update-secret-version-stage "
    "--secret-id {secret} --version-stage AWSPENDING --remove-from-version-id {version}"
)
_HINT_BOOTSTRAP = ("publish the first token with `rotator bootstrap POLICY --token-file FILE --token-id ID` (a policy "
                   "with this secret as its store)")
_HINT_UNEXPECTED = ("a defect of rotator or an input it does not foresee: the traceback is in the function's log; "
                    "the other secrets were done, and this one is tried again by the next scheduled run")
_HINT_UNEXPECTED_STEP = ("a defect of rotator or an input it does not foresee: the traceback is in the function's log; "
                         "Secrets Manager invokes a failed step again, and the next schedule runs revoke-expired again")
#: Secrets Manager's limit of tags on one secret; tags whose key begins with "aws:" do not count
MAX_TAGS = 50


class _NotVerifiedInTime(TransientError):
    """testSecret gave up: the issuer's last refusal (what and where), with a hint that names what bounded
    the wait (the policy's verify_timeout, or the function's timeout) and what became of the AWSPENDING
    token, as the engine's VERIFY says them (rotator/core/engine.py, _NotVerifiedInTime)."""


class LambdaContext(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


#: Called with a step boundary name (``swept``, ``minted``, ``put``, ``recorded``, ``moved``,
#: ``revoked``); the crash tests kill the process there.
Checkpoint = Callable[[str], None]

_configs: dict[Path, tuple[tuple[int | None, int | None], PolicyBundle]] = {}
_clients: dict[tuple[AwsSecretsManagerSettings, str], SecretsManagerAPI] = {}
_logging_ready = False


def setup_lambda_logging() -> None:
    """The SDK loggers held at WARNING, as the CLI holds them (rotator/observe/logs.py QUIET_LOGGERS:
    botocore's DEBUG canonical request carries the execution role's session token, which no redactor
    knows), on every call: the runtime sets the root logger's level (the function's LoggingConfig
    ApplicationLogLevel, DEBUG included), and the SDK loggers follow it unless held. Once per process:
    the ``rotator`` loggers' level, and the redactor on every root handler (the Lambda runtime
    installs its own handler before the function is imported)."""
    global _logging_ready
    from rotator.observe.logs import QUIET_LOGGERS, RedactingFilter

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    if _logging_ready:
        return
    level = os.environ.get(LOG_LEVEL_ENV, "INFO").upper()
    logging.getLogger("rotator").setLevel(getattr(logging, level, logging.INFO))
    root = logging.getLogger()
    if not root.handlers:  # outside Lambda (a local run): print somewhere
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    _logging_ready = True


def handle(
    event: Mapping[str, Any],
    context: LambdaContext | None = None,
    *,
    client: SecretsManagerAPI | None = None,
    config_path: Path | None = None,
    clock: Clock | None = None,
    checkpoint: Checkpoint | None = None,
) -> dict[str, Any] | None:
    """Run one rotation step, or the revoke-expired action. Raises RotatorError on failure
    (Secrets Manager then retries the rotation; a scheduled action shows as a failed invocation)."""
    quiet_sdk_wire_logs()
    try:
        if not isinstance(event, Mapping):
            raise PermanentError("the event is not a JSON object")
        env = _Env(context, client, clock or SystemClock(), checkpoint or (lambda _name: None))
        config = _load_config(config_path)
        action = event.get("action")
        if action is not None:
            if action != "revoke-expired":
                # reprlib: bounded in depth and length (a nested or huge event field must not crash the
                # function or fill its log).
                raise PermanentError(f"unknown action {reprlib.repr(action)}",
                                     hint='the only action is "revoke-expired"')
            return _revoke_expired_action(event, config, env)
        _rotation_step(event, config, env)
        return None
    except RotatorError as exc:
        text = REDACTOR.redact(str(exc))
        hint = REDACTOR.redact(getattr(exc, "hint", ""))
        logger.error("%s%s", text, f" (fix: {hint})" if hint else "")
        # The Lambda runtime prints the exception it is given (its text, as errorMessage) and returns it
        # to the caller, past this module's redacting filter: it gets the redacted text too.
        exc.args = (text,)
        if hint:
            exc.hint = hint
        raise
    except Exception as exc:  # a bug, or input no check foresaw
        from rotator.config.inline_secrets import mask_tokens  # (a failure path: not on the cold start)

        # masked by shape too: the redactor knows only the values of live Secrets, and no check foresaw this.
        # The traceback goes to the log, through the redacting filter; the runtime gets this text alone.
        text = mask_tokens(REDACTOR.redact(f"unexpected {type(exc).__name__}: {exc}"))
        logger.error("%s (fix: %s)", text, _HINT_UNEXPECTED_STEP, exc_info=exc)
        raise RotatorError(text, hint=_HINT_UNEXPECTED_STEP) from None


# -- plumbing -----------------------------------------------------------------------------------
# Plain classes, not dataclasses: creating a dataclass costs ~0.5 ms of every cold start (its
# methods are compiled then), and these records need no generated methods.


class _Env:
    __slots__ = ("checkpoint", "client", "clock", "context")

    def __init__(self, context: LambdaContext | None, client: SecretsManagerAPI | None, clock: Clock,
                 checkpoint: Checkpoint) -> None:  # fmt: skip
        self.context, self.client, self.clock, self.checkpoint = context, client, clock, checkpoint


class _Described(SecretView):
    """What DescribeSecret says (:class:`SecretView`), with the secret's rotation schedule: its
    ``RotationRules`` (None: not given) and ``NextRotationDate`` in UTC (None: not given; moto gives
    none for a ScheduleExpression), which createSecret and the compliance line check the policy's
    token lifetime against (:func:`_rotation_schedule`)."""

    __slots__ = ("next_rotation", "rotation_rules")

    def __init__(self, answer: Mapping[str, Any]) -> None:
        view = SecretView.from_answer(answer)
        super().__init__(arn=view.arn, name=view.name, rotation_enabled=view.rotation_enabled, tags=view.tags,
                         stages=view.stages)  # fmt: skip
        rules = answer.get("RotationRules")
        self.rotation_rules: Mapping[str, Any] | None = rules if isinstance(rules, Mapping) else None
        when = answer.get("NextRotationDate")
        self.next_rotation: datetime | None = None
        if isinstance(when, datetime):
            self.next_rotation = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _describe(api: SecretsManagerAPI, secret_id: str, where: str) -> _Described | None:
    """DescribeSecret, as secretsmanager.describe reads it, keeping the rotation schedule; None if the
    secret does not exist."""
    answer = describe_answer(api, secret_id, where)
    return None if answer is None else _Described(answer)


class _Target:
    """One secret, its policy, and a client for it."""

    __slots__ = ("api", "config", "policy", "settings", "view")

    def __init__(self, config: PolicyBundle, policy: Policy, settings: AwsSecretsManagerSettings,
                 api: SecretsManagerAPI, view: _Described) -> None:  # fmt: skip
        self.config, self.policy, self.settings, self.api, self.view = config, policy, settings, api, view

    @property
    def where(self) -> str:
        return f"aws-secretsmanager:{self.view.arn}"

    @property
    def retry(self) -> RetryPolicy:
        return self.config.retry


def _load_config(path: Path | None) -> PolicyBundle:
    """The policies, from the bundle beside the policy file when it matches the file (no pydantic
    on the cold path, see rotator/config/policy_bundle.py), else from the policy file itself."""
    path = path or Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
    bundle = bundle_path(path)
    stamp = (_mtime(path), _mtime(bundle))
    if stamp == (None, None):
        raise ConfigError(
            f"cannot read policy file {path} (nor its bundle {bundle.name})",
            hint=f"put rotator.toml (and rotator.bundle.json) at the deployment package's root, or set {CONFIG_ENV}",
        )
    cached = _configs.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    config: PolicyBundle | None = None
    if stamp[1] is not None:
        try:
            config = read_bundle(bundle, policy_file=path)
        except BundleError as exc:
            if stamp[0] is None:
                raise
            logger.warning("%s; validating %s instead (a slower cold start). Fix: %s", exc, path.name, exc.hint)
    if config is None:
        from rotator.config.policy import load_config  # pydantic and every adapter's settings model

        config = PolicyBundle.from_config(load_config(path))
    _configs[path] = (stamp, config)
    return config


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", hint="check the function's files") from None


def _client(settings: AwsSecretsManagerSettings, policy: str) -> SecretsManagerAPI:
    """Built once per process and settings: a warm Lambda reuses it."""
    key = (settings, policy)
    if key not in _clients:
        _clients[key] = boto3_client(settings, policy)
    return _clients[key]


def _aws_stores(policy: Policy) -> list[AwsSecretsManagerSettings]:
    return [
        b.settings for b in policy.stores
        if b.type == AwsSecretsManagerStore.kind and isinstance(b.settings, AwsSecretsManagerSettings)
    ]  # fmt: skip


#: A policy and its store: the client that reads a secret the store names.
_Via = tuple[Policy, AwsSecretsManagerSettings]
_SECRET_ARN = r"^arn:aws[a-z-]*:secretsmanager:([a-z0-9-]+):\d{12}:secret:(.+)\Z"


def _names_offline(settings: AwsSecretsManagerSettings, secret_id: str) -> bool:
    """Does the store's secret_id name ``secret_id``, judged from the strings alone?"""
    if settings.secret_id == secret_id:
        return True
    arn = re.match(_SECRET_ARN, secret_id)
    if arn is not None:
        # A store given by name names that name in its own region only: staging and prod may share a
        # name in two regions (as _policy_of judges), and a rotation event's ARN read with the other
        # region's client "does not exist". A store given by ARN matches only its own ARN (region and
        # account included: settings.matches).
        return settings.region_name == arn.group(1) and settings.matches(secret_id, _without_suffix(arn.group(2)))
    # A name: a store given as an ARN names it by the ARN's name part, with or without the suffix
    # AWS appends. (settings.matches(sid, name) would hold for any name: its sid is its own ARN.)
    store_arn = re.match(_SECRET_ARN, settings.secret_id)
    return store_arn is not None and secret_id in (store_arn.group(2), _without_suffix(store_arn.group(2)))


def _without_suffix(arn_name: str) -> str:
    """The secret's name in an ARN's name part: without AWS's ``-XXXXXX`` suffix, if it has one."""
    return arn_name[:-7] if re.search(r"-[A-Za-z0-9]{6}\Z", arn_name) and len(arn_name) > 7 else arn_name


def _resolve(config: PolicyBundle, secret_id: str, env: _Env, via: _Via | None = None) -> _Target:
    """The policy and client for ``secret_id``; ConfigError says what to change if there is none.

    ``via``: the policy and store whose client reads the secret first (default: the first policy
    whose store names ``secret_id``). It does not choose the policy: the secret does, as for every
    step (:func:`_policy_of`)."""
    if via is None:
        candidates = [(p, s) for p in config.policies for s in _aws_stores(p) if _names_offline(s, secret_id)]
        if not candidates:
            raise ConfigError(
                f"{config.path}: no policy has an aws-secretsmanager store for secret {secret_id}",
                hint='add a [[policy.store]] with type = "aws-secretsmanager" and '
                "secret_id = the secret's name or ARN",
            )
        via = candidates[0]
    view, api = _read(secret_id, env, via)
    return _target(config, secret_id, view, api, via, env)


def _read(secret_id: str, env: _Env, via: _Via) -> tuple[_Described, SecretsManagerAPI]:
    """DescribeSecret ``secret_id`` with the client of ``via``'s store."""
    api = env.client or _client(via[1], via[0].name)
    view = _describe(api, secret_id, f"aws-secretsmanager:{secret_id}")
    if view is None:
        raise PermanentError(f"secret {secret_id} does not exist", hint="check the SecretId and the region")
    return view, api


def _target(config: PolicyBundle, secret_id: str, view: _Described, api: SecretsManagerAPI, via: _Via,
            env: _Env, *, sole: Policy | None = None) -> _Target:  # fmt: skip
    """``secret_id``, which ``api`` (the client of ``via``) read as ``view``, under the policy it
    names (``sole``: see :func:`_policy_of`)."""
    policy = _policy_of(config, view, sole)
    stores = _aws_stores(policy)
    if len(policy.stores) != 1 or len(stores) != 1:
        raise ConfigError(
            f"policy {policy.name!r} has {len(policy.stores)} store(s); the rotation function needs exactly one, "
            "of type aws-secretsmanager",
            hint="the function publishes only to the secret it rotates: give it a policy of its own, with that store",
        )
    refuse_in_lambda(policy, config.path)  # an issuer whose mint kills AWSCURRENT (InfluxDB 3 kind = "operator")
    settings = stores[0]
    if not settings.matches(view.arn, view.name):
        raise ConfigError(
            f"policy {policy.name!r} publishes to secret {settings.secret_id}, not to {view.arn}",
            hint=f"point the policy's store at this secret, or tag the secret {POLICY_TAG} with the right policy",
        )
    if env.client is None and (settings, policy.name) != (via[1], via[0].name):
        api = _client(settings, policy.name)
        if settings != via[1]:
            # Read through another store's client (its region, endpoint or role; a name is matched in every
            # region): the secret to rotate is the one the policy's own client finds, and it must name the
            # policy too. (A replica in another region carries its primary's tags.)
            again = _describe(api, secret_id, f"aws-secretsmanager:{secret_id}")
            if again is None or (again.arn != view.arn and not (
                    settings.matches(again.arn, again.name) and _policy_of(config, again, sole).name == policy.name)):
                raise ConfigError(
                    f"secret {view.arn} names policy {policy.name!r}, whose store's own client (region "
                    f"{settings.region_name}) finds {f'another secret, {again.arn},' if again else 'no secret'} "
                    f"as {secret_id}",
                    hint="give the policy's store the secret's ARN, region, endpoint_url and role_arn, or "
                    f"tag the secret {POLICY_TAG} with the right policy",
                )
            view = again
    return _Target(config, policy, settings, api, view)


def _policy_of(config: PolicyBundle, view: SecretView, sole: Policy | None = None) -> Policy:
    """The policy that rotates the secret, wherever the function reaches it from (a step, or the
    scheduled revoke-expired going through the policy file): its tag ``rotator:policy``, else the
    ``policy`` tag rotator's store set, else ``ROTATOR_POLICY``. Several policies may name one secret;
    only this one may judge, and so refuse, the claims recorded on it.

    ``sole`` (the scheduled run: the policy whose store led to the secret) is the answer when nothing
    names one and no other policy's store names the secret: a secret made by other tooling, not
    bootstrapped nor tagged yet, must not fail every scheduled run; nor may a guess between several
    policies judge its claims."""
    name, source = view.tags.get(POLICY_TAG), f"its tag {POLICY_TAG}"
    if not name and view.tags.get("managed-by") == "rotator":
        # The store tags the secrets it creates or adopts with `policy` (rotator bootstrap/rotate).
        name, source = view.tags.get("policy"), "its tag policy (set by rotator's store)"
    if not name:
        name, source = os.environ.get(POLICY_ENV, ""), f"the environment variable {POLICY_ENV}"
    if not name:
        # A store names the secret by its name in its own region only (staging and prod may share a name).
        region = view.arn.split(":")[3] if view.arn.count(":") >= 3 else ""
        naming = [p.name for p in config.policies
                  if any(s.matches(view.arn, view.name) and s.region_name == region for s in _aws_stores(p))]
        if sole is not None and naming == [sole.name]:
            return sole
        raise ConfigError(
            f"secret {view.arn} names no policy"
            + (f" (and policies {', '.join(map(repr, naming))} all name it)" if len(naming) > 1 else ""),
            hint=f"tag the secret {POLICY_TAG}=<policy name>, or set {POLICY_ENV} on the function",
        )
    try:
        return config.policy(name)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (named by {source} of secret {view.arn})", hint=exc.hint) from None


def _required(event: Mapping[str, Any], key: str) -> str:
    value = event.get(key)
    if not isinstance(value, str) or not value:
        raise PermanentError(f"the event has no {key}", hint="Secrets Manager sends Step, SecretId, ClientRequestToken")
    return value


def _secret_id(value: str, where: str) -> str:
    """``value`` if it is a secret name or ARN: it goes into messages, log lines and printed commands."""
    if not secret_id_is_valid(value):
        raise PermanentError(f"{where}: SecretId {reprlib.repr(value)} is not a secret name or ARN",
                             hint="letters, digits and /_+=.@-, at most 512, or a Secrets Manager ARN")
    return value


# -- the rotation steps -------------------------------------------------------------------------


def _rotation_step(event: Mapping[str, Any], config: PolicyBundle, env: _Env) -> None:
    raw_step = _required(event, "Step")
    step = _STEPS.get(raw_step)
    if step is None:
        raise PermanentError(f"unknown Step {reprlib.repr(raw_step)}", hint=f"one of {', '.join(sorted(set(_STEPS)))}")
    secret_id = _secret_id(_required(event, "SecretId"), "the event")
    token = _required(event, "ClientRequestToken")
    if re.fullmatch(_RUN_ID, token) is None:
        # The token is the run id in a minted token's description: one the tag search cannot match
        # would leave the orphans of a lost mint answer unrevoked. A version id AWS accepts (at most 64
        # printable characters) is shown whole, quoted for the shell: the command must work as printed.
        shown = len(token) <= 64 and token.isprintable()
        version = shlex.quote(token) if shown else "VERSION_ID (describe-secret: the version with only AWSPENDING)"
        raise PermanentError(
            f"ClientRequestToken {repr(token) if shown else reprlib.repr(token)} is not 32-64 letters, digits and "
            "hyphens",
            hint="Secrets Manager's own tokens are UUIDs. Clear this rotation's label (aws secretsmanager "
            f"update-secret-version-stage --secret-id {secret_id} --version-stage AWSPENDING "
            f"--remove-from-version-id {version}), then start again with a UUID as "
            "`--client-request-token` (e.g. from `uuidgen`), or leave it out",
        )
    rotation_token = event.get("RotationToken")
    target = _resolve(config, secret_id, env)
    view = target.view
    # The preamble every step shares.
    if not view.rotation_enabled:
        raise PermanentError(
            f"{step}: rotation is not enabled for secret {view.arn}",
            hint="enable it with `aws secretsmanager rotate-secret` (see docs/aws-lambda.md)",
        )
    if token not in view.stages:
        raise PermanentError(
            f"{step}: version {token} is not a version of secret {view.arn} (or has no label)",
            hint="Secrets Manager sends the ClientRequestToken of the rotation it started",
        )
    if CURRENT in view.stages[token]:
        logger.info("%s: version %s is already AWSCURRENT of %s; nothing to do", step, token, view.arn)
        return
    if PENDING not in view.stages[token]:
        raise PermanentError(
            f"{step}: version {token} of secret {view.arn} is not AWSPENDING",
            hint="only the rotation Secrets Manager started may run",
        )
    if not target.policy.enabled:
        raise PermanentError(
            f"{step}: policy {target.policy.name!r} is disabled (enabled = false)",
            hint="enable it in the policy file, or turn off rotation of the secret",
        )
    if not view.managed and not target.policy.adopt:
        raise OwnershipError(
            f"{step}: secret {view.arn} is not tagged {MANAGED_BY_KEY}={MANAGED_BY}",
            hint=f"publish the first token with `rotator bootstrap {target.policy.name} --token-file FILE --token-id "
                 "ID`, or set `adopt = true` in the policy",
        )
    rotation = _Rotation(target, token, rotation_token if isinstance(rotation_token, str) else None, env)
    {
        "createSecret": rotation.create_secret,
        "setSecret": rotation.set_secret,
        "testSecret": rotation.test_secret,
        "finishSecret": rotation.finish_secret,
    }[step]()


class _RevokeReport:
    """What one pass over a secret's revocation records did. ``deferred``: due, not tried for lack of
    time (kept for the next pass); ``anomalies``: records whose time was later than rotator writes, or
    earlier than the secret's versions allow. The orphan sweep (:func:`_sweep_orphans`) adds its
    revocations to ``revoked``, ``failed``, ``deferred`` and ``waiting``, and what it found to the
    ``orphans*`` lists; ``listing``: the issuer's tokens as the pass listed them (None: not listed),
    which the sweep reuses; ``listing_problem``/``sweep``: why the listing, or the sweep, is missing;
    ``held``: the tokens found AWSCURRENT or AWSPENDING when revocations were due (never revoked)."""

    __slots__ = ("anomalies", "deferred", "failed", "held", "listing", "listing_problem", "orphans", "orphans_left",
                 "orphans_revoked", "orphans_waiting", "refused", "revoked", "skipped", "sweep", "sweep_error",
                 "waiting")  # fmt: skip

    def __init__(self) -> None:
        self.refused: list[str] = []
        self.revoked: list[str] = []
        self.skipped: list[str] = []
        self.failed: list[str] = []
        self.deferred: list[str] = []
        self.anomalies: list[str] = []
        self.held: set[str] = set()
        self.waiting = 0
        self.listing: list[TokenInfo] | None = None
        self.listing_problem: str | None = None  # "failed" or "out of time"
        self.orphans: list[str] = []  # found: minted here for a version that has no label, held by none
        self.orphans_revoked: list[str] = []
        self.orphans_waiting: list[str] = []  # not yet: a createSecret may still run, or a grace not over
        self.orphans_left: list[str] = []  # found and not revoked: failed, out of time, or age unknown
        self.sweep = "not run"  # "done", "failed", "out of time"
        self.sweep_error: str | None = None


class _Rotation:
    """One step of one rotation of one secret."""

    def __init__(self, target: _Target, token: str, rotation_token: str | None, env: _Env) -> None:
        self.t = target
        self.token = token
        self.rotation_token = rotation_token
        self.env = env
        self.clock = env.clock
        self.issuer: Issuer = registry.build_issuer(target.policy, target.policy.context(env.clock))

    # -- the four steps ------------------------------------------------------------------------

    def create_secret(self) -> None:
        current = self._current()
        try:  # revocations after grace: failures are logged, they never stop a rotation
            # ... nor take the time it needs: they may use half of what is left when they start.
            context = self.env.context
            half = context.get_remaining_time_in_millis() // 2 if context is not None else 0
            _revoke_due(self.t, self.issuer, current, self.env, _Budget(context, self.clock, keep_ms=half))
        except RotatorError as exc:
            logger.error("createSecret: revoke-expired failed, retried next time: %s", exc)
        if self._pending() is not None:
            logger.info("createSecret: version %s already holds a token; nothing to do", self.token)
            return
        self._check_schedule(self.clock.now())
        if self.rotation_token and not accepts_parameter(self.t.api, "PutSecretValue", "RotationToken"):
            # PutSecretValue would refuse it after the mint, on every attempt of the rotation: refused before.
            raise PermanentError(
                f'createSecret: Unknown parameter in input: "RotationToken": Secrets Manager sent a RotationToken, '
                f"which this botocore ({botocore.__version__}) cannot pass to PutSecretValue, so no new token could "
                "be stored; nothing was minted",
                hint=HINT_OLD_SDK.format(parameter="RotationToken"),
            )
        keep = {current.token_id, *self._previous_ids(), *_revocation_records(self.t.view.tags),
                *_attention_ids(self.t.view.tags)}
        self._sweep(current.value, keep)
        self.env.checkpoint("swept")
        # finishSecret records the revocation of the current token as a tag: a token id no tag key can
        # hold, or a secret without room for the tag, is refused now, before anything is minted, not after.
        key = _revoke_tag_key(current.token_id, "createSecret", self.t.view.arn, self.token)
        _check_tag_room(self.t.view, "createSecret", {MANAGED_BY_KEY, key})
        now = self.clock.now()
        expires_at = now + self.t.policy.lifetime
        request = MintRequest(self.t.policy.name, self.token, self.t.policy.token_description(self.token), expires_at)
        minted = self._call(
            lambda: self.issuer.mint(request, current.value), "createSecret: mint",
            before_retry=lambda: self._sweep(current.value, keep, only_run=self.token),
        )  # fmt: skip
        logger.info("createSecret: minted token %s for version %s", minted.token_id, self.token)
        try:  # the next rotation records this token's revocation as a tag
            _revoke_tag_key(minted.token_id, "createSecret", self.t.view.arn, self.token, minted=True)
        except PermanentError:
            self._call(partial(self.issuer.revoke, minted.token_id, current.value), f"revoke {minted.token_id}")
            raise
        self.env.checkpoint("minted")
        record = TokenRecord(minted.value, minted.token_id, self.t.policy.issuer_type, self.t.policy.name, now,
                             minted.expires_at or expires_at)  # fmt: skip
        self._put_pending(record, current.value)
        self.env.checkpoint("put")

    def set_secret(self) -> None:
        current = self._current()
        pending = self._pending_required("setSecret")
        info = self._minted_here("setSecret", current, pending)
        logger.info("setSecret: token %s is active at the issuer, which minted it: nothing to set", info.token_id)

    def test_secret(self) -> None:
        current = self._current()
        pending = self._pending_required("testSecret")
        if pending.token_id == current.token_id:
            logger.info("testSecret: AWSPENDING holds the current token (a RotateImmediately=false test); verifying it")
        what = f"testSecret: verify token {pending.token_id}"
        budget = _Budget(self.env.context, self.clock, keep_ms=_SAFETY_MS)
        wait, call = self._wait(self.t.policy.verify_timeout, budget)
        try:
            budget.check(self.issuer, self.t.policy.name, what)
        except _OutOfTime as exc:
            raise self._not_verified_in_time(TransientError(str(exc)), wait, pending, current, call,
                                             started=False) from None  # fmt: skip
        try:
            self._call(lambda: self.issuer.verify(pending.value), what, deadline=self.clock.now() + wait)
        except TransientError as exc:  # retried until the deadline: what reaches here is the giving up
            raise self._not_verified_in_time(exc, wait, pending, current, call) from None
        logger.info("testSecret: token %s works", pending.token_id)

    def finish_secret(self) -> None:
        view = self.t.view
        pending = self._pending_required("finishSecret")
        current_version = view.version_with(CURRENT)
        previous = self._current()  # the issuer's credential for the check below, and what is superseded
        if previous.token_id == pending.token_id:
            raise PermanentError(
                f"finishSecret: AWSPENDING version {self.token} holds the AWSCURRENT token {pending.token_id}: "
                "nothing was rotated",
                hint=_HINT_CLEAR.format(secret=view.arn, version=self.token),
            )
        # setSecret made the same check, but finishSecret may be invoked without it (lambda:InvokeFunction
        # and PutSecretValue on AWSPENDING are enough): promoting a token this rotation did not mint would
        # also schedule the real current token's revocation. The cost: one issuer listing per rotation.
        self._minted_here("finishSecret", previous, pending)
        tags = {MANAGED_BY_KEY: MANAGED_BY}
        key = _revoke_tag_key(previous.token_id, "finishSecret", view.arn, self.token)
        # The token's grace runs from the move below, which a slow UpdateSecretVersionStage (the SDK's
        # retries) delays by up to the rest of this invocation: counted from now, the token was revoked
        # that much inside its grace. The move lands before this invocation ends, or never: the record,
        # written before it (a crash in between must leave one), allows for that whole time, and once
        # the move has landed, step 2b brings it down to the move's own time.
        due = self.clock.now() + self._time_left() + self.t.policy.grace
        tags[key] = _rfc3339(due)
        _check_tag_room(view, "finishSecret", set(tags))
        # 1. Record the revocation before the move: a crash in between leaves a record of the
        #    still-current token, which revoke-expired skips and the retried finishSecret rewrites.
        self._write("TagResource", lambda api: api.tag_resource(
            SecretId=view.arn, Tags=[{"Key": k, "Value": v} for k, v in tags.items()]))  # fmt: skip
        self.env.checkpoint("recorded")
        # 1b. The checks above are as old as the issuer's listing, and the move below compares AWSCURRENT
        #     only. Meanwhile AWSPENDING may have been cleared (the docs' fix for a stuck rotation): the
        #     version is then an abandoned rotation's, whose token the sweeps may revoke. Read after the
        #     record: a sweep that found the label gone before this read is refused here; one that finds it
        #     gone after also finds the record, which holds it back while this invocation may still move
        #     (_finish_under_way).
        if self._moved_meanwhile(pending, previous, current_version):
            return
        # 2. Move AWSCURRENT; RemoveFromVersionId makes it a compare-and-set.
        move: dict[str, str] = {"SecretId": view.arn, "VersionStage": CURRENT, "MoveToVersionId": self.token}
        if current_version is not None:
            move["RemoveFromVersionId"] = current_version
        self._write("UpdateSecretVersionStage", lambda api: api.update_secret_version_stage(**move))
        self.env.checkpoint("moved")
        # 2b. The move has landed (its answer is here): grace after now is grace after it. Without this the
        #     token would wait the rest of the invocation too; if it fails, or the invocation dies before
        #     it (the retried finishSecret finds the version AWSCURRENT and returns), the later time stays:
        #     the token waits longer, never less. (Written only after the move, the record would be early
        #     by the whole move whenever the invocation died between the move and the rewrite.)
        moved = self.clock.now() + self.t.policy.grace
        if _rfc3339(moved) != tags[key]:
            try:
                self._write("TagResource", lambda api: api.tag_resource(
                    SecretId=view.arn, Tags=[{"Key": key, "Value": _rfc3339(moved)}]))  # fmt: skip
                due = moved
            except RotatorError as exc:
                logger.warning("finishSecret: token %s stays due at %s, not grace after the move: %s",
                               previous.token_id, tags[key], exc)  # fmt: skip
        # 2c. A revocation of the token may still have landed between 1b and the move: an invocation paused
        #     there, or a revocation outside the sweeps' fence (a person, a record someone deleted). AWSCURRENT
        #     must never hold a dead token (invariant 1), so it goes back while the superseded one is valid.
        self._check_promoted(pending, previous, current_version, recorded=_rfc3339(due))
        # 3. Drop AWSPENDING (left on AWSCURRENT's version it is harmless: only warn).
        try:
            self._write("UpdateSecretVersionStage", lambda api: api.update_secret_version_stage(
                SecretId=view.arn, VersionStage=PENDING, RemoveFromVersionId=self.token))  # fmt: skip
        except RotatorError as exc:
            logger.warning("finishSecret: could not remove AWSPENDING from version %s: %s", self.token, exc)
        logger.info("finishSecret: version %s (token %s) is AWSCURRENT of %s; token %s will be revoked after %s",
                    self.token, pending.token_id, view.arn, previous.token_id, _rfc3339(due))  # fmt: skip

    # -- helpers -------------------------------------------------------------------------------

    def _check_schedule(self, now: datetime) -> None:
        """PermanentError, before anything is minted, when the secret's rotation schedule can leave the
        token minted now AWSCURRENT, or within its grace as AWSPREVIOUS, after it expires: its lifetime
        comes from the policy's schedule, and Secrets Manager rotates on the secret's, which nothing
        else compares. A rate (or AutomaticallyAfterDays) is compared as the interval + its window +
        grace against the lifetime; a cron expression by the end of the window that opens at its
        NextRotationDate against the new token's expiry - grace. No schedule (rotation on demand only),
        one that cannot be read, or an issuer whose tokens never expire, is not refused."""
        view, policy = self.t.view, self.t.policy
        schedule = _rotation_schedule(view.rotation_rules)
        if schedule is None:
            return
        shown, interval, window = schedule
        expires_at = now + policy.lifetime
        if interval is not None:
            longest = interval + window
            if longest + policy.grace <= policy.lifetime:
                return
        else:
            if view.next_rotation is None:
                return
            window = _window_end(view.next_rotation, window) - view.next_rotation
            if view.next_rotation + window <= expires_at - policy.grace:
                return
            longest = view.next_rotation + window - now
        if _mints_without_expiry(self.issuer):
            # The lifetime only sets the expiry rotator asks for; this issuer's tokens ignore it.
            logger.info("createSecret: secret %s rotates on RotationRules %s, later than policy %r's token lifetime "
                        "allows, but issuer %s mints tokens that never expire (they stay valid until revoked): "
                        "not refused", view.arn, shown, policy.name, type(self.issuer).kind)  # fmt: skip
            return
        from rotator.config.schedule import format_duration  # an error's wording: not on the cold path

        span = format_duration
        until = (f"up to {span(longest)} (the next rotation: every {span(interval)}, starting within a window of "
                 f"{span(window)})" if interval is not None else
                 f"until the next rotation, at {_rfc3339(view.next_rotation or now)}"
                 f"{f' (+ a window of {span(window)})' if window else ''}, {span(longest)} from now")  # fmt: skip
        raise PermanentError(
            f"createSecret: secret {view.arn} rotates on RotationRules {shown}: the token minted now stays "
            f"AWSCURRENT {until}, and must stay valid for the policy's grace ({span(policy.grace)}) after that, "
            f"{span(longest + policy.grace)} in all; policy {policy.name!r} (schedule {policy.schedule_text!r}) "
            f"mints tokens that live {span(policy.lifetime)} (until {_rfc3339(expires_at)}), so AWSCURRENT "
            "would expire while still in use. Nothing was minted",
            hint="make the secret rotate at least as often as the policy's schedule, its window included (at most "
            f"{span(policy.lifetime - policy.grace)} from one rotation to the next): the stack's "
            "RotationScheduleExpression and RotationWindow, or aws secretsmanager rotate-secret --secret-id "
            f"{view.arn} --rotation-rules '{{\"ScheduleExpression\": \"rate(N days)\", \"Duration\": \"4h\"}}' "
            "--no-rotate-immediately; or lengthen the policy's schedule (or its lifetime) to cover the secret's "
            "and deploy the zip built with it (build_zip.py --policy-file). Then rotate the secret again",
        )

    def _moved_meanwhile(self, pending: TokenRecord, previous: TokenRecord, current_version: str | None) -> bool:
        """finishSecret's labels read again just before its move: True when another attempt of this rotation
        has made the version AWSCURRENT already (nothing left to do); PermanentError, nothing moved, when the
        version lost AWSPENDING or AWSCURRENT left ``current_version`` meanwhile."""
        arn = self.t.view.arn
        fresh = describe(self.t.api, arn, self.t.where)
        if fresh is None:
            raise PermanentError(f"finishSecret: secret {arn} no longer exists; AWSCURRENT was not moved")
        labels = fresh.stages.get(self.token, ())
        if CURRENT in labels:
            logger.info("finishSecret: version %s became AWSCURRENT of %s meanwhile (another attempt of this "
                        "rotation); nothing to do", self.token, arn)  # fmt: skip
            return True
        if PENDING not in labels:
            raise PermanentError(
                f"finishSecret: version {self.token} of secret {arn} lost its AWSPENDING label while this finishSecret "
                f"ran (cleared by hand, or the rotation cancelled): its token {pending.token_id} belongs to an "
                "abandoned rotation now, which the sweeps revoke, so AWSCURRENT was not moved; it still holds "
                f"version {current_version} (token {previous.token_id})",
                hint=f"nothing to undo; to rotate, start a new rotation: aws secretsmanager rotate-secret --secret-id "
                f"{arn} (the abandoned token is revoked by a later sweep)",
            )
        now_current = fresh.version_with(CURRENT)
        if now_current != current_version:
            raise PermanentError(
                f"finishSecret: AWSCURRENT of secret {arn} moved from version {current_version} to {now_current} "
                f"while this finishSecret ran (by hand?); AWSCURRENT was not moved again. The revocation of token "
                f"{previous.token_id} this attempt recorded stays: it is revoked after its grace unless AWSCURRENT "
                "holds it again",
                hint="nothing to undo: Secrets Manager's next attempt of this rotation replaces the new AWSCURRENT; "
                f"if that version must stay, {_HINT_CLEAR.format(secret=arn, version=self.token)}",
            )
        return False

    def _check_promoted(self, pending: TokenRecord, previous: TokenRecord, current_version: str | None, *,
                        recorded: str) -> None:  # fmt: skip
        """After the move: unless the issuer still has ``pending`` active, move AWSCURRENT back to
        ``current_version`` (a compare-and-set too), remove the record of ``previous``'s revocation this
        attempt wrote (``recorded``: its time, :meth:`_drop_own_record`), drop AWSPENDING, and raise. A
        listing that fails is logged: the token was active at the check before the move, and a good
        rotation is not undone."""
        arn = self.t.view.arn
        try:
            listed = self._call(lambda: self.issuer.list_tokens(previous.value),
                                "finishSecret: list tokens after the move")  # fmt: skip
            tokens = self._call(lambda: with_unlisted(self.issuer, listed, pending.token_id, previous.value),
                                f"finishSecret: look up token {pending.token_id}")  # fmt: skip
        except RotatorError as exc:
            logger.warning("finishSecret: could not check token %s at the issuer after the move (it was active "
                           "before): %s", pending.token_id, exc)  # fmt: skip
            return
        info = next((t for t in tokens if t.token_id == pending.token_id), None)
        if info is not None and info.is_active(self.clock.now()):
            return
        back = current_version or "VERSION_ID (the version that was AWSCURRENT before)"
        try:
            if current_version is None:
                raise PermanentError("no version was AWSCURRENT before the move")
            self._write("UpdateSecretVersionStage", lambda api: api.update_secret_version_stage(
                SecretId=arn, VersionStage=CURRENT, MoveToVersionId=current_version,
                RemoveFromVersionId=self.token))  # fmt: skip
        except RotatorError as exc:
            raise NeedsAttention(
                f"finishSecret: token {pending.token_id} was revoked at the issuer while AWSCURRENT of secret {arn} "
                f"moved to its version {self.token}, and moving AWSCURRENT back to version {back} (token "
                f"{previous.token_id}) failed: {exc}",
                hint="check describe-secret's VersionIdsToStages; if AWSCURRENT is still on the dead token's version, "
                f"move it back: aws secretsmanager update-secret-version-stage --secret-id {arn} --version-stage "
                f"AWSCURRENT --move-to-version-id {back} --remove-from-version-id {self.token}; then "
                f"{_HINT_CLEAR.format(secret=arn, version=self.token)}, and rotate again",
            ) from None
        self._drop_own_record(previous, current_version, recorded)
        try:  # the token is dead: the rotation cannot finish, and the next one needs the label free
            self._write("UpdateSecretVersionStage", lambda api: api.update_secret_version_stage(
                SecretId=arn, VersionStage=PENDING, RemoveFromVersionId=self.token))  # fmt: skip
            cleared = " and AWSPENDING removed from it"
        except RotatorError as exc:
            logger.warning("finishSecret: could not remove AWSPENDING from version %s: %s", self.token, exc)
            cleared = f"; AWSPENDING is still on it ({_HINT_CLEAR.format(secret=arn, version=self.token)})"
        raise PermanentError(
            f"finishSecret: token {pending.token_id} was revoked at the issuer (by a person, or a sweep of abandoned "
            f"rotations) while AWSCURRENT of secret {arn} moved to its version {self.token}: AWSCURRENT was moved "
            f"back to version {current_version} (token {previous.token_id}){cleared}",
            hint=f"find who revoked it (the function's log, the issuer's audit); then start a new rotation: "
            f"aws secretsmanager rotate-secret --secret-id {arn}",
        )

    def _drop_own_record(self, previous: TokenRecord, current_version: str, recorded: str) -> None:
        """After the move back: remove ``rotator:revoke:<previous>``, which this attempt wrote (step 1) for
        a supersession that did not last. Left on the token AWSCURRENT holds again, it would make the
        token revocable at once, without its grace, if something other than a rotation's finishSecret
        (which writes a new time) replaced it later: a label moved by hand.

        Removed only while the secret, read again, shows this attempt's own state: AWSCURRENT on
        ``current_version`` (the move back), AWSPENDING still on this rotation's version (Secrets
        Manager starts no other rotation while it is, so no other rotation's finishSecret is recording
        this token now), and the record holding ``recorded``, the time this attempt wrote last. Any other
        writer of the key writes its own time: another attempt of this rotation (Secrets Manager's retry
        beside this one), an earlier rotation whose finishSecret failed, revoke-expired's corrections. A
        record of theirs is left, as is the record whenever the check cannot be made: revoke-expired
        skips a record of AWSCURRENT's token, and the compliance line lists it apart
        (``recorded_current_token_ids``). A write between the read and the removal can only be such a
        retry's step 1 (no other rotation can run yet); if that retry moves AWSCURRENT, its step 2b
        records the token again."""
        arn, key = self.t.view.arn, REVOKE_TAG_PREFIX + previous.token_id
        try:
            fresh = describe(self.t.api, arn, self.t.where)
            if fresh is None or fresh.tags.get(key) != recorded or fresh.version_with(CURRENT) != current_version \
                    or PENDING not in fresh.stages.get(self.token, ()):
                logger.info("finishSecret: the record %s of %s is not this attempt's alone now; left for "
                            "revoke-expired, which skips it while the token is AWSCURRENT", key, arn)  # fmt: skip
                return
            self._write("UntagResource", lambda api: api.untag_resource(SecretId=arn, TagKeys=[key]))
            _retag(self.t.view, drop=key)
        except RotatorError as exc:
            logger.warning("finishSecret: could not remove the record %s of %s after the move back (revoke-expired "
                           "skips it while the token is AWSCURRENT): %s", key, arn, exc)  # fmt: skip

    def _current(self) -> TokenRecord:
        """The AWSCURRENT token: the issuer's credential (self-rotation) and what is superseded."""
        answer = read_stage(self.t.api, self.t.view.arn, CURRENT, self.t.where)
        if answer is None or answer[1] is None:
            raise PermanentError(f"secret {self.t.view.arn} holds no rotator token as AWSCURRENT",
                                 hint=_HINT_BOOTSTRAP)  # fmt: skip
        return TokenRecord.from_payload(answer[1], where=f"{self.t.where} version {answer[0]}")

    def _minted_here(self, step: str, current: TokenRecord, pending: TokenRecord) -> TokenInfo:
        """The issuer's listing of ``pending``; PermanentError unless it is active and is the token this
        rotation minted. Whatever AWSPENDING holds is input: its issuer description must carry this
        version's tag, so neither the current token left there by a dry run nor one someone else put
        there passes. One list_tokens call (and a lookup when the listing leaves the token out)."""
        listed = self._call(lambda: self.issuer.list_tokens(current.value), f"{step}: list tokens")
        tokens = self._call(lambda: with_unlisted(self.issuer, listed, pending.token_id, current.value),
                            f"{step}: look up token {pending.token_id}")
        info = next((t for t in tokens if t.token_id == pending.token_id), None)
        if info is None or not info.is_active(self.clock.now()):
            state = "unknown to" if info is None else "revoked or expired at"
            raise PermanentError(
                f"{step}: token {pending.token_id} in AWSPENDING version {self.token} is {state} the issuer",
                hint=_HINT_CLEAR.format(secret=self.t.view.arn, version=self.token),
            )
        from rotator.core.revocation_rule import carries_tag

        if pending.token_id == current.token_id or not carries_tag(info.description, self.t.policy.tag(self.token)):
            why = ("it is the AWSCURRENT token: nothing would be rotated" if pending.token_id == current.token_id
                   else f"its description at the issuer does not carry {self.t.policy.tag(self.token)}")
            raise PermanentError(
                f"{step}: token {pending.token_id} in AWSPENDING version {self.token} is not the token this "
                f"rotation minted ({why})",
                hint=_HINT_CLEAR.format(secret=self.t.view.arn, version=self.token),
            )
        return info

    def _pending(self) -> TokenRecord | None:
        answer = read_stage(self.t.api, self.t.view.arn, PENDING, self.t.where, version_id=self.token)
        if answer is None:
            return None
        if answer[1] is None:
            raise PermanentError(f"AWSPENDING version {self.token} of {self.t.view.arn} holds no rotator payload",
                                 hint=_HINT_CLEAR.format(secret=self.t.view.arn, version=self.token))  # fmt: skip
        try:
            return TokenRecord.from_payload(answer[1], where=f"{self.t.where} version {self.token}")
        except PermanentError as exc:  # not a token record: the way out is clearing AWSPENDING, not a repair
            raise PermanentError(str(exc), hint=_HINT_CLEAR.format(secret=self.t.view.arn, version=self.token)) \
                from None

    def _pending_required(self, step: str) -> TokenRecord:
        pending = self._pending()
        if pending is None:
            raise PermanentError(
                f"{step}: AWSPENDING version {self.token} of {self.t.view.arn} holds no value yet",
                hint="createSecret runs first; Secrets Manager retries the whole rotation",
            )
        return pending

    def _previous_ids(self) -> set[str]:
        if self.t.view.version_with(PREVIOUS) is None:
            return set()
        previous = _lenient(read_stage(self.t.api, self.t.view.arn, PREVIOUS, self.t.where))
        return {previous.token_id} if previous else set()

    def _sweep(self, credential: Secret, keep: set[str], only_run: str | None = None) -> None:
        """Revoke the live tokens this function minted that no version holds and no record names:
        the orphans of attempts that failed between mint and PutSecretValue (the proofs:
        :func:`_minted_for_runs`). The scheduled run sweeps the orphans of rotations abandoned
        since (:func:`_sweep_orphans`). A token its version still holds under any label (an operator's
        own included) is kept, as that sweep keeps it. A token stored in a version whose label was
        cleared is judged by its value too, as that sweep does (:func:`_held_by_value`): kept while
        AWSCURRENT or AWSPENDING holds it under another id, not revoked before grace when another label
        does."""
        tokens = self._call(lambda: self.issuer.list_tokens(credential), "createSecret: list tokens")
        found, records = _minted_for_runs(self.t, tokens, keep, self.clock.now(), "createSecret", only_run)
        lost: list[tuple[TokenInfo, str]] = []  # never stored: no finishSecret can promote them
        stored: list[tuple[TokenInfo, str]] = []  # stored in a version whose label was cleared
        for info, run in found:
            # Read now, not with ``keep``: another attempt of the same rotation (Secrets Manager retries a
            # step that timed out while the first one may still run, or be paused) may have put this token
            # into its version since, and even moved AWSCURRENT to it. A version without a label (its
            # rotation abandoned) keeps nothing; one with a label of an operator's own keeps its token, as
            # the scheduled sweep does: they disagreed, and the token was revoked or not by which ran first.
            labels, held = self._version_record(run)
            holds = held is not None and held.token_id == info.token_id
            stage = next((label for label in labels if label in (CURRENT, PENDING, PREVIOUS)), None)
            if holds and stage is not None:
                logger.info("createSecret: token %s is %s in version %s (another attempt put it there); not an "
                            "orphan", info.token_id, stage, run)  # fmt: skip
                continue
            if holds and labels:
                logger.info("createSecret: token %s is held by version %s, which has a staging label of its own; "
                            "not an orphan while it keeps one", info.token_id, run)  # fmt: skip
                continue
            (stored if holds else lost).append((info, run))
        if stored:
            # finishSecret promotes the token its version holds: a version whose label was cleared may still
            # become AWSCURRENT by a finishSecret that checked the label before (_finish_under_way). Its
            # orphans are left to the scheduled sweep, which waits for the same fence; this rotation does
            # not wait.
            fresh, labelled = _labelled_records(self.t)
            finishing = _finish_under_way(fresh, labelled, self.clock.now())
            if finishing is not None:
                logger.info("createSecret: a finishSecret may still be moving AWSCURRENT off token %s (its "
                            "revocation was recorded lately) onto a version whose label was cleared; not revoking "
                            "%s now (the scheduled revoke-expired does once it cannot)", finishing,
                            ", ".join(info.token_id for info, _ in stored))  # fmt: skip
                stored = []
            elif records is not None:  # always read when anything was found
                # By the id alone, a token whose value a labelled version holds under another token's id
                # (a payload edited) was revoked at once: inside its grace, or as AWSCURRENT's value.
                stored = [(info, run) for info, run in stored
                          if not self._kept_by_value(info, run, fresh, labelled, records)]  # fmt: skip
        for info, run in lost + stored:
            logger.warning("createSecret: revoking token %s, minted for version %s and never stored or made current "
                           "(or its rotation abandoned)", info.token_id, run)  # fmt: skip
            self._call(partial(self.issuer.revoke, info.token_id, credential), f"revoke {info.token_id}")

    def _kept_by_value(self, info: TokenInfo, run: str, fresh: SecretView, labelled: Mapping[str, TokenRecord],
                       records: _VersionRecords) -> bool:  # fmt: skip
        """Whether :meth:`_sweep` leaves ``info`` (stored in ``run``, which has no label) for now because a
        labelled version holds its value under another id (:func:`_held_by_value`)."""
        now = self.clock.now()
        try:
            in_use, superseded = _held_by_value("createSecret", self.t, info, run, fresh, labelled, records, now)
        except RotatorError as exc:
            # Not known to be unheld: left to the scheduled sweep, which asks again, rather than failing the rotation.
            logger.error("createSecret: %s: token %s, minted for version %s, which has no label: whether a labelled "
                         "version holds its value cannot be told (%s); not revoked (the scheduled revoke-expired or "
                         "the next createSecret retries)", self.t.view.arn, info.token_id, run, exc)  # fmt: skip
            return True
        if in_use:
            return True
        if superseded is not None and superseded > now:
            logger.info("createSecret: %s: token %s, minted for version %s, which has no label, is not revoked before "
                        "%s (the scheduled revoke-expired or a later createSecret revokes it then)", self.t.view.arn,
                        info.token_id, run, _rfc3339(superseded))  # fmt: skip
            return True
        return False

    def _put_pending(self, record: TokenRecord, credential: Secret) -> None:
        request: dict[str, Any] = {
            "SecretId": self.t.view.arn,
            "ClientRequestToken": self.token,
            "SecretString": json.dumps(record.payload()),
            "VersionStages": [PENDING],
        }
        if self.rotation_token:
            request["RotationToken"] = self.rotation_token

        def put(api: SecretsManagerAPI) -> bool:
            try:
                answer = api.put_secret_value(**request)
            except botocore.exceptions.ClientError as exc:
                if client_error_code(exc) == "ResourceExistsException":
                    return False  # this version got another value meanwhile (AWS refuses to change it)
                raise
            # An answer that is not Secrets Manager's stored nothing: failed as any put, so the minted token
            # is revoked (_stored_after_failure) rather than logged as stored in a version that has no value.
            _check_write(self.t, "PutSecretValue", answer, version_id=self.token)
            return True

        try:
            stored = self._aws("PutSecretValue", put)
        except RotatorError:
            if self._stored_after_failure(record, credential):
                return
            raise
        if not stored:
            # An issuer that names a token after the rotation (InfluxDB 3: <prefix>-<ClientRequestToken>)
            # gives every attempt of it the same id, and names are unique: the version may hold a token
            # by this very id, another attempt's, minted once a sweep had deleted this one's (or the
            # other way round: which one is not known here). Revoking the id could then delete the
            # token the version holds, maybe AWSCURRENT's, so it is left alone. Should the version's
            # token be the deleted one, testSecret fails on it; once its AWSPENDING label is cleared
            # (as that error says), the next rotation's sweep revokes this token, which no version
            # then holds. An id of the issuer's own is never another token's: revoked at once.
            if self.token in record.token_id:
                try:
                    _, held = self._version_record(self.token)
                except RotatorError as exc:
                    logger.warning("createSecret: version %s already has a value, which could not be read (%s); "
                                   "token %s is left to a later createSecret's sweep", self.token, exc,
                                   record.token_id)  # fmt: skip
                    return
                if held is not None and held.token_id == record.token_id:
                    logger.warning("createSecret: version %s already holds a token with id %s, this attempt's "
                                   "id (the issuer names tokens after the rotation): not revoking that id",
                                   self.token, record.token_id)  # fmt: skip
                    return
            logger.warning("createSecret: version %s already holds another token; revoking %s",
                           self.token, record.token_id)  # fmt: skip
            self._revoke_quietly(record.token_id, credential)
            return
        logger.info("createSecret: stored token %s as AWSPENDING version %s", record.token_id, self.token)

    def _version_record(self, version_id: str) -> tuple[tuple[str, ...], TokenRecord | None]:
        """``version_id``'s staging labels and the record it holds, read now (no labels and None: no
        such version or no value; None: not a token record)."""
        answer = read_labelled_version(self.t.api, self.t.view.arn, version_id, self.t.where)
        if answer is None:
            return (), None
        return answer[0], _lenient((version_id, answer[1]))

    def _stored_after_failure(self, record: TokenRecord, credential: Secret) -> bool:
        """After a failed PutSecretValue: did it land anyway? If not, revoke the token now (the
        retry's sweep does it if this fails too)."""
        try:
            there = self._pending()
        except RotatorError:
            return False
        if there is not None and there.token_id == record.token_id:
            logger.info("createSecret: the failed PutSecretValue did store token %s", record.token_id)
            return True
        self._revoke_quietly(record.token_id, credential)
        return there is not None  # another value is there: this rotation can go on with it

    def _revoke_quietly(self, token_id: str, credential: Secret) -> None:
        try:
            self._call(lambda: self.issuer.revoke(token_id, credential), f"revoke {token_id}")
        except RotatorError as exc:
            logger.error("createSecret: could not revoke unused token %s (the next createSecret retries): %s",
                         token_id, exc)  # fmt: skip

    def _time_left(self) -> timedelta:
        """The time this invocation has left: Lambda's longest timeout without a context (a local run,
        where nothing says), and never more (the most _bound_due_time allows a record for)."""
        context = self.env.context
        if context is None:
            return _MAX_INVOCATION
        left = timedelta(milliseconds=max(0, context.get_remaining_time_in_millis()))
        return min(left, _MAX_INVOCATION)

    def _wait(self, limit: timedelta, budget: _Budget) -> tuple[timedelta, float | None]:
        """How long testSecret may start verify attempts: ``limit``, or less if the invocation's time runs
        out first; and the seconds of the issuer's longest call counted in that (None: none counted).

        An attempt may take the issuer's longest call (``call_timeout_seconds``): one started with less
        than that left before the time kept to report (_SAFETY_MS) could run into the function's timeout,
        and the error saying what became of the token would never be logged. When the invocation never
        had that much, attempts start while any time is left, as :meth:`_Budget.check` allows them."""
        left = budget.left_ms()
        if left is None:
            return limit, None
        need = call_timeout_of(self.issuer)
        if left >= need * 1000:
            return min(limit, timedelta(milliseconds=left - need * 1000)), need
        return min(limit, timedelta(milliseconds=max(0, left))), None

    def _not_verified_in_time(self, exc: TransientError, wait: timedelta, pending: TokenRecord,
                              current: TokenRecord, call: float | None, *,
                              started: bool = True) -> _NotVerifiedInTime:  # fmt: skip
        """The error of a testSecret that tried until its deadline: the adapter's hint was for a retry
        (a new token may take a while), which is over; what bounded the wait is the fix, and the operator
        must know the new token's fate (ids only: the message never holds a token value). ``call``: the
        seconds of one issuer call kept out of the wait (:meth:`_wait`); ``started``: False when the
        invocation had no time left for even one attempt."""
        from rotator.config.schedule import format_duration  # an error's wording: not on the cold path

        limit = self.t.policy.verify_timeout
        verify_timeout = f"the policy's verify_timeout ({format_duration(limit)})"
        kept = f"{_SAFETY_MS // 1000}s kept to report"
        if call is not None:
            kept += f" and {format_duration(timedelta(seconds=call))} the issuer's longest call may take"
        if wait < limit or not started:  # the invocation's time ran out first
            waited = (f"the {format_duration(wait)} this invocation had left (the function's timeout, "
                      f"TimeoutSeconds, less {kept}; shorter than {verify_timeout})")
            setting = "the function's TimeoutSeconds (at most 900)"
        else:
            waited = verify_timeout
            longest = format_duration(timedelta(seconds=call_timeout_of(self.issuer)))
            setting = ("verify_timeout in the policy file and deploy a zip built with it (keep TimeoutSeconds "
                       f"more than verify_timeout + {_SAFETY_MS // 1000}s + {longest}, the issuer's longest call)")
        if not started:
            hint = f"no attempt to verify token {pending.token_id} could start within {waited}: raise {setting}"
        elif isinstance(exc, NotYetAccepted):
            hint = (f"token {pending.token_id} was not accepted within {waited}: if the cluster activates tokens "
                    f"slowly, raise {setting}")
        else:  # the issuer kept failing (down, throttling): waiting longer is not the fix
            cause = f" ({exc.hint})" if exc.hint else ""
            hint = f"verifying token {pending.token_id} kept failing until {waited} ran out{cause}"
        message = f"testSecret: gave up verifying token {pending.token_id} of AWSPENDING version {self.token}: {exc}"
        return _NotVerifiedInTime(message, hint=hint + self._pending_fate(pending, current))

    def _pending_fate(self, pending: TokenRecord, current: TokenRecord) -> str:
        """What a testSecret that gave up leaves: the rotation is not undone here (Secrets Manager retries
        it with the same version, whose token createSecret keeps), and AWSCURRENT was never touched."""
        if pending.token_id == current.token_id:
            return (f"; nothing was minted: AWSPENDING holds the current token {current.token_id} (a "
                    "RotateImmediately=false test), and AWSCURRENT is unchanged")
        clear = _HINT_CLEAR.format(secret=self.t.view.arn, version=self.token)
        return (f"; token {pending.token_id} stays AWSPENDING (version {self.token}), not revoked, and AWSCURRENT "
                f"still holds token {current.token_id}: Secrets Manager's next attempt of this rotation tests the "
                f"same token again (createSecret mints no other). To give the rotation up instead, {clear}; the "
                f"next createSecret, or a scheduled revoke-expired, then revokes token {pending.token_id}")

    def _call(self, fn: Callable[[], T], what: str, deadline: datetime | None = None,
              before_retry: Callable[[], None] | None = None) -> T:  # fmt: skip
        return call_with_retry(fn, what=f"{self.t.policy.name}: {what}", policy=self.t.retry, clock=self.clock,
                               deadline=deadline, before_retry=before_retry)  # fmt: skip

    def _aws(self, operation: str, fn: Callable[[SecretsManagerAPI], T]) -> T:
        with map_errors(self.t.where, operation, kms_key_id=self.t.settings.kms_key_id, secret_id=self.t.view.arn):
            return fn(self.t.api)

    def _write(self, operation: str, fn: Callable[[SecretsManagerAPI], Mapping[str, Any]]) -> None:
        """A write whose answer must be Secrets Manager's (:func:`_check_write`)."""
        _check_write(self.t, operation, self._aws(operation, fn))


def _tag(target: _Target, tags: Mapping[str, str]) -> None:
    """TagResource of revoke-expired's, its answer checked (:func:`_check_write`); ``target.view`` follows."""
    with map_errors(target.where, "TagResource", secret_id=target.view.arn):
        answer = target.api.tag_resource(SecretId=target.view.arn,
                                         Tags=[{"Key": k, "Value": v} for k, v in tags.items()])  # fmt: skip
    _check_write(target, "TagResource", answer)
    _retag(target.view, add=tags)


def _untag(target: _Target, key: str) -> None:
    """UntagResource of revoke-expired's, its answer checked (:func:`_check_write`); ``target.view`` follows."""
    with map_errors(target.where, "UntagResource", secret_id=target.view.arn):
        answer = target.api.untag_resource(SecretId=target.view.arn, TagKeys=[key])
    _check_write(target, "UntagResource", answer)
    _retag(target.view, drop=key)


def _check_write(target: _Target, operation: str, answer: Mapping[str, Any], *, version_id: str | None = None) -> None:
    """PermanentError unless ``answer``, to a write on the target's secret, is Secrets Manager's.

    botocore takes any HTTP 200 for a done write: a captive portal's page, an empty JSON object or an empty
    body (secretsmanager.check_answer). Taken as done, finishSecret reported AWSCURRENT moved and its
    revocation recorded while neither was, and createSecret a token stored that no version holds.
    PutSecretValue: the secret and the version written, ``version_id`` (its ClientRequestToken);
    UpdateSecretVersionStage: the secret; TagResource and UntagResource, which answer no body: the request id."""
    if operation in ("TagResource", "UntagResource"):
        check_request_id(target.api, target.where, operation, answer)
    else:
        check_answer(target.api, target.where, operation, answer, target.view.arn, version=version_id is not None,
                     version_id=version_id)


# -- the secret's rotation schedule -------------------------------------------------------------


def _rotation_schedule(rules: Mapping[str, Any] | None) -> tuple[str, timedelta | None, timedelta] | None:
    """The secret's rotation schedule as DescribeSecret's ``RotationRules`` give it: how it reads, the
    interval (None: a ``cron()`` expression, whose gaps are not computed here), and the window in which
    each rotation starts (``Duration``; by default, as AWS documents for ``rate()`` and ``cron()`` alike:
    an hour for a schedule in hours, else the rest of the UTC day, whence up to 24 hours: see
    :func:`_window_end`). None when no schedule is set (rotation on demand only; moto gives
    ``AutomaticallyAfterDays: 0``) or it cannot be read: nothing to compare."""
    if not rules:
        return None
    expression, days, duration = rules.get("ScheduleExpression"), rules.get("AutomaticallyAfterDays"), rules.get(
        "Duration")  # fmt: skip
    interval: timedelta | None
    if isinstance(expression, str) and expression.strip():
        shown = f"ScheduleExpression {expression.strip()!r}"
        rate = re.match(_RATE, expression.strip())
        if expression.strip().startswith("cron("):
            interval, window = None, timedelta(hours=1) if _cron_in_hours(expression) else timedelta(days=1)
        elif rate is None:
            return None
        elif rate.group(2) == "hour":
            interval, window = timedelta(hours=int(rate.group(1))), timedelta(hours=1)
        else:
            interval, window = timedelta(days=int(rate.group(1))), timedelta(days=1)
    elif isinstance(days, int) and not isinstance(days, bool) and days > 0:
        shown, interval, window = f"AutomaticallyAfterDays {days}", timedelta(days=days), timedelta(days=1)
    else:
        return None
    if duration is not None:
        hours = re.match(_DURATION, duration.strip()) if isinstance(duration, str) else None
        if hours is None:
            return None
        shown, window = f"{shown}, Duration {duration.strip()!r}", timedelta(hours=int(hours.group(1)))
    return shown, interval, window


def _cron_in_hours(expression: str) -> bool:
    """Whether a ``cron(Minutes Hours Day Month Weekday Year)`` fires more than once a day (its hours
    field ``*``, ``*/N``, ``a/N``, a list or a range): AWS calls that a schedule in hours, whose default
    window is an hour. Any other form counts as one in days: its default window, the rest of the day,
    is the longer, so a misread errs towards refusing."""
    text = expression.strip()
    fields = text[len("cron("):-1].split() if text.endswith(")") else []
    return len(fields) == _AWS_CRON_FIELDS and any(c in fields[1] for c in "*/,-")


def _window_end(start: datetime, window: timedelta) -> datetime:
    """The latest a rotation whose window opens at ``start`` (a NextRotationDate, UTC) can begin: AWS
    keeps every window within its UTC day, which is where the default one for a schedule in days ends."""
    day_end = datetime(start.year, start.month, start.day, tzinfo=UTC) + timedelta(days=1)
    return min(start + window, day_end)


def _rotation_after_expiry(view: _Described, current: TokenRecord, grace: timedelta) -> bool:
    """Whether the secret's next scheduled rotation (NextRotationDate, up to the end of its window)
    comes later than the current token's expiry - grace: the token would expire, or the clients' grace
    after its replacement end, before it is replaced. False when either time is unknown."""
    if view.next_rotation is None or current.expires_at is None:
        return False
    from rotator.config.timefmt import as_utc

    schedule = _rotation_schedule(view.rotation_rules)
    latest = _window_end(view.next_rotation, schedule[2]) if schedule is not None else view.next_rotation
    # Compared as a difference: expiry - grace overflows for a payload's year 1 (Go's zero time, which
    # another tool may write for "no expiry"), which then reads as expired long ago.
    return latest - as_utc(current.expires_at) > -grace


def _mints_without_expiry(issuer: Issuer) -> bool:
    """Whether ``issuer``'s tokens never expire by themselves (its optional ``mints_expiring``, false for
    InfluxDB v2, whose authorizations have no expiry: core/contracts.py, Issuer): such a token works
    until it is revoked, however late the rotation."""
    return getattr(issuer, "mints_expiring", True) is False


# -- orphans ------------------------------------------------------------------------------------


def _minted_for_runs(target: _Target, tokens: Sequence[TokenInfo], keep: set[str], now: datetime, step: str,
                     only_run: str | None = None) -> tuple[list[tuple[TokenInfo, str]], _VersionRecords | None]:
    """The live tokens of ``tokens`` (not in ``keep``) that rotator's records prove this function minted
    for a run of *this* secret, each with that run (its version id), and the version records read (None
    when nothing needed them). The proofs: the issuer's description carries ``rotator:<policy>:<run>``,
    and the run is a version of this secret no younger than the token (:meth:`_VersionRecords.may_have_minted`):
    another secret rotated for the same policy on the same account tags its tokens alike, and anyone who
    may rotate or write this secret can give a new version that other secret's id. A token the records do
    not prove is logged and left alone. Whether a version still holds or labels the token is the
    caller's to judge."""
    # The tag ends where revocation_rule.carries_tag says a word ends: ``\w`` (a letter or digit of
    # any script, or "_") and "-" continue it. A narrower end here would count a token described
    # "<tag>_copy" as this run's, which the rule then refuses: its NeedsAttention failed every
    # createSecret until a person deleted the token.
    pattern = re.compile(re.escape(target.policy.tag_prefix()) + f"({_RUN_ID})" + r"(?![\w-])")
    records: _VersionRecords | None = None
    found: list[tuple[TokenInfo, str]] = []
    for info in tokens:
        if not info.is_active(now) or info.token_id in keep:
            continue
        run = _tagged_run(pattern, info.description)
        if run is None:
            continue
        if only_run is not None and run != only_run:
            continue
        if records is None:  # read only when there is something to revoke
            records = _VersionRecords(target)
        if not records.may_have_minted(run, info):
            logger.warning("%s: token %s carries the tag of run %s, which is not a version of %s created before it: "
                           "left alone (another secret rotated for policy %s on this account?)", step, info.token_id,
                           run, target.view.arn, target.policy.name)  # fmt: skip
            continue
        from rotator.core.revocation_rule import Claim, check_revocable

        claim = Claim(info.token_id, target.policy.name, minted_by=[run], source="the tag search")
        try:
            if not check_revocable(claim, tokens, [], now):  # the rule, here only for its tag check
                continue
        except NeedsAttention as exc:
            # Not provably an orphan of this secret: left alone. Raised, it would fail this and every
            # later createSecret (the sweep runs before each mint) for as long as the token lives.
            logger.warning("%s: token %s left alone, not revoked: %s", step, info.token_id, exc)
            continue
        found.append((info, run))
    return found, records


def _tagged_run(pattern: re.Pattern[str], description: str) -> str | None:
    """The run of the first tag ``pattern`` finds in ``description`` whose run id is not part of a
    token-shaped text, or None.

    An InfluxDB v2 token (standard base64) pasted after the tag has a + or / 32-64 characters in about one
    time in four: what came before it was taken for a run id, logged (part of a token value in
    CloudWatch) and the token for this function's (inline_secrets.starts_a_token, as the inventory reads tags)."""
    for match in pattern.finditer(description):
        # Imported here, not at cold start: only a description that carries the tag needs it.
        from rotator.config.inline_secrets import starts_a_token

        if not starts_a_token(description, match.start(1), match.group(1)):
            return match.group(1)
    return None


# -- revocation after grace ---------------------------------------------------------------------


def _revocation_records(tags: Mapping[str, str]) -> dict[str, str]:
    """token id -> the RFC 3339 time after which it may be revoked."""
    return {k[len(REVOKE_TAG_PREFIX) :]: v for k, v in tags.items() if k.startswith(REVOKE_TAG_PREFIX)}


def _attention_ids(tags: Mapping[str, str]) -> set[str]:
    """The token ids of ``rotator:attention:<id>`` tags: left for a person, whom no sweep pre-empts."""
    return {k[len(ATTENTION_TAG_PREFIX) :] for k in tags if k.startswith(ATTENTION_TAG_PREFIX)}


def _finish_under_way(fresh: SecretView, labelled: Mapping[str, TokenRecord], now: datetime) -> str | None:
    """The AWSCURRENT token's id when a finishSecret may still be moving AWSCURRENT off it, else None.

    ``fresh`` and ``labelled`` (each labelled version's record) must be read *after* the sweep's own
    read of the labels of the versions it would revoke tokens of. finishSecret checks that its version
    still has AWSPENDING just before its move, but an invocation paused between that check and the move
    still moves AWSCURRENT onto a version whose label was cleared meanwhile (the docs' fix for a stuck
    rotation): a sweep that then revokes the version's token as abandoned leaves a dead AWSCURRENT, and
    finishSecret's own check after the move may come before that revocation.

    The fence needs no new state: finishSecret records the revocation of the AWSCURRENT token before
    that check, and the record's time is never earlier than when it was written (it is then + the
    invocation's time left + grace; corrections bring it down to now + grace + 15 minutes at most). A
    finishSecret that can still move started less than an invocation ago, so while a record of the token
    AWSCURRENT holds is less than an invocation (and the clock slack) past its time, the sweeps wait.
    Grace is not subtracted: it may have changed since the record was written; the cost is only that
    after a finishSecret that failed before its move (one that moved leaves no record of the AWSCURRENT
    token), an orphan waits until the record's time + 30 minutes. A finishSecret can move only while
    AWSCURRENT is on the version it read (its move is a compare-and-set), so a record of another token
    tells nothing of it."""
    from rotator.core.revocation_rule import CLOCK_SLACK

    version = fresh.version_with(CURRENT)
    record = labelled.get(version) if version is not None else None
    if record is None:
        return None
    text = _revocation_records(fresh.tags).get(record.token_id)
    when = _parse_time(text) if text is not None else None
    if when is None or when <= now - _MAX_INVOCATION - CLOCK_SLACK:
        return None
    return record.token_id


def _label_holders(target: _Target) -> dict[str, str]:
    """The tokens AWSCURRENT and AWSPENDING hold now (DescribeSecret, then each one's value): token id ->
    label. A version whose payload is not a token record holds none."""
    fresh = describe(target.api, target.view.arn, target.where)
    if fresh is None:
        raise PermanentError(f"secret {target.view.arn} no longer exists")
    held: dict[str, str] = {}
    for stage in (CURRENT, PENDING):
        version = fresh.version_with(stage)
        if version is not None and (record := _lenient(read_stage(target.api, fresh.arn, stage, target.where,
                                                                   version_id=version))) is not None:
            held.setdefault(record.token_id, stage)
    return held


def _labelled_records(target: _Target) -> tuple[SecretView, dict[str, TokenRecord]]:
    """DescribeSecret now, and the record each labelled version holds (versions without one left out)."""
    fresh = describe(target.api, target.view.arn, target.where)
    if fresh is None:
        raise PermanentError(f"secret {target.view.arn} no longer exists")
    labelled = {version: record for version in fresh.stages
                if (record := _lenient(read_stage(target.api, fresh.arn, None, target.where, version_id=version)))}
    return fresh, labelled


class _OutOfTime(RotatorError):
    """The invocation has no time left to start an issuer call: what it was for waits for the next pass."""


class _GaveUp(Exception):
    """An issuer call's last TransientError, carried out of call_with_retry when its tries are used up."""

    def __init__(self, error: TransientError) -> None:
        super().__init__(str(error))
        self.error = error


class _Budget:
    """When an issuer call of the revocations may start, so that the invocation ends before Lambda's
    timeout with its results written (the summary, a compliance line per secret).

    ``keep_ms`` is kept for what follows the calls: writing the results (the scheduled run), or the
    rotation itself (createSecret). Without a Lambda context (a local run) nothing is limited: the
    retry policy alone bounds the calls. With one, an attempt starts only if the issuer's longest call
    (``call_timeout_seconds``) still ends before the time kept; when the invocation never had that
    much (a function timeout shorter than one issuer call), only while any is left, with a warning:
    a call that hangs can then still run into the timeout. A secret shares the time left with those
    still to do (:meth:`begin`): once its share is used, it starts no retry and no further call, so
    one issuer that does not answer costs the others one call, not the invocation.
    """

    __slots__ = ("_attempted", "_clock", "_context", "_first_left", "_keep_ms", "_share_floor", "_warned")

    def __init__(self, context: LambdaContext | None, clock: Clock, *, keep_ms: int) -> None:
        self._context, self._clock, self._keep_ms = context, clock, keep_ms
        self._first_left = self.left_ms()
        self._share_floor = 0  # the current secret's share ends when left_ms() is down to this
        self._attempted = False  # the current secret made an issuer attempt
        self._warned: set[str] = set()

    def left_ms(self) -> int | None:
        """The time left for issuer calls; None: no limit."""
        if self._context is None:
            return None
        return self._context.get_remaining_time_in_millis() - self._keep_ms

    def begin(self, secrets_left: int) -> bool:
        """Start the next secret, the first of ``secrets_left`` still to do; False: no time left for it."""
        self._attempted = False
        left = self.left_ms()
        if left is None:
            return True
        self._share_floor = left - left // max(1, secrets_left)
        return left > 0

    def retry_deadline(self) -> datetime | None:
        """No wait between tries past the current secret's share."""
        left = self.left_ms()
        if left is None:
            return None
        return self._clock.now() + timedelta(milliseconds=max(0, left - self._share_floor))

    def check(self, issuer: Issuer, policy: str, what: str) -> None:
        """Before an issuer attempt: _OutOfTime if it may not start."""
        left = self.left_ms()
        if left is None:
            return
        need = int(call_timeout_of(issuer) * 1000)
        if self._first_left is not None and self._first_left < need:
            if policy not in self._warned:
                self._warned.add(policy)
                logger.warning(
                    "policy %s: this invocation had %d s for issuer calls, less than one call of its issuer may "
                    "take (%d s): an issuer that does not answer can hold the function until its timeout, before "
                    "the results are written; raise the function's timeout above %d s, or lower the issuer's "
                    "timeout_s", policy, self._first_left // 1000, need // 1000,
                    (need + self._keep_ms) // 1000 + 1)  # fmt: skip
            enough = left > 0
        else:
            enough = left >= need
        if not enough:
            raise _OutOfTime(f"{what}: not started, {max(0, left) // 1000} s left for issuer calls in this "
                             f"invocation, and one may take {need // 1000} s")  # fmt: skip
        if self._attempted and left <= self._share_floor:
            raise _OutOfTime(f"{what}: not started, this secret used its share of the invocation's time")
        self._attempted = True


def _issuer_call(fn: Callable[[], T], what: str, target: _Target, issuer: Issuer, env: _Env, budget: _Budget) -> T:
    """``fn``, one issuer call, through call_with_retry within ``budget``: at most the retry policy's
    tries, each only when the budget lets it start (before the first: _OutOfTime; after a failed one:
    that failure), and no wait past the secret's share."""
    what = f"{target.policy.name}: {what}"
    tries = 0
    last: TransientError | None = None

    def attempt() -> T:
        nonlocal tries, last
        try:
            budget.check(issuer, target.policy.name, what)
        except _OutOfTime:
            if last is None:
                raise
            raise _GaveUp(last) from None
        tries += 1
        try:
            return fn()
        except TransientError as exc:
            last = exc
            if tries >= target.retry.attempts:
                raise _GaveUp(exc) from None
            raise

    try:
        return call_with_retry(attempt, what=what, policy=target.retry, clock=env.clock,
                               deadline=budget.retry_deadline())  # fmt: skip
    except _GaveUp as gave_up:
        logger.warning("%s failed after %d attempt(s), giving up: %s", what, tries, gave_up.error)
        raise gave_up.error from None


def _defer(target: _Target, report: _RevokeReport, due: list[str], holders: Mapping[str, str],
           exc: _OutOfTime) -> None:  # fmt: skip
    """The due tokens no time is left for keep their records for the next pass (AWSCURRENT's and
    AWSPENDING's are skipped as ever)."""
    report.skipped += [t for t in due if t in holders]
    deferred = [t for t in due if t not in holders]
    logger.warning("revoke-expired: %s: %d due revocation(s) left for the next pass (%s)", target.view.arn,
                   len(deferred), exc)  # fmt: skip
    report.deferred += deferred


def _bound_due_time(target: _Target, token_id: str, text: str, latest: datetime, report: _RevokeReport) -> None:
    """``rotator:revoke:<token_id>`` holds ``text``, a time later than ``latest``, the latest rotator
    writes (finishSecret records, before its move, its time plus the time its invocation has left, at
    most :data:`_MAX_INVOCATION`, plus grace; that invocation is over): not a time rotator wrote
    (someone with TagResource, or a grace shortened since). The token is due at
    ``latest`` instead, written back so that the time holds on the next passes, and reported."""
    bounded = _rfc3339(latest)
    report.anomalies.append(token_id)
    logger.error(
        "revoke-expired: ANOMALY: tag %s%s of %s holds %s, later than any time rotator records (now + grace %s "
        "+ 15 minutes): someone else wrote it, or the policy's grace was shortened since; the token is due at "
        "%s instead", REVOKE_TAG_PREFIX, token_id, target.view.arn, reprlib.repr(text), target.policy.grace,
        bounded)  # fmt: skip
    _write_due_time(target, token_id, bounded)


def _raise_due_time(target: _Target, token_id: str, text: str, floor: datetime, report: _RevokeReport) -> None:
    """``rotator:revoke:<token_id>`` holds ``text``, a time earlier than ``floor``, grace after the creation
    of the version that replaced the token (_VersionRecords.revocable_from): not a time rotator wrote
    (someone with TagResource, or a grace lengthened since). The token is due at ``floor`` instead,
    written back (the next passes find a time they accept), and reported."""
    raised = _rfc3339(floor)
    report.anomalies.append(token_id)
    logger.error(
        "revoke-expired: ANOMALY: tag %s%s of %s holds %s, earlier than grace (%s) after the creation of the "
        "version that replaced the token: someone else wrote it, or the policy's grace was lengthened since; the "
        "token is due at %s instead", REVOKE_TAG_PREFIX, token_id, target.view.arn, reprlib.repr(text),
        target.policy.grace, raised)  # fmt: skip
    _write_due_time(target, token_id, raised)


def _write_due_time(target: _Target, token_id: str, text: str) -> None:
    """Write ``text`` into ``rotator:revoke:<token_id>``; a failure is logged (the next pass finds the
    same time and corrects it again)."""
    try:
        _tag(target, {REVOKE_TAG_PREFIX + token_id: text})
    except RotatorError as exc:
        logger.error("revoke-expired: could not write the corrected time of token %s (the next pass corrects it "
                     "again): %s", token_id, exc)  # fmt: skip


def _revoke_due(target: _Target, issuer: Issuer, current: TokenRecord, env: _Env,
                budget: _Budget | None = None) -> _RevokeReport:  # fmt: skip
    """Revoke every recorded token whose grace has passed, confirmed by the issuer (its
    ``revoke`` confirms, see contracts.Issuer), then drop its record. Failures are logged and
    reported, not raised.

    A tag is only a claim (anyone with TagResource writes one): each token goes through
    rotator/core/revocation_rule.py with the records this function can trust (see _trusted_claim).
    A token that is AWSCURRENT or AWSPENDING is skipped; one the records do not prove to be this
    policy's is refused: its tag becomes ``rotator:attention:<id>`` and a person looks. Nor is a
    tag's time trusted to be rotator's: one later than now + grace + 15 minutes (the time finishSecret's
    invocation had left, and the clock slack) is brought down to that, the latest time rotator itself
    could have written (:func:`_bound_due_time`); one earlier
    than grace after the creation of the version that replaced the token (- clock slack) is raised to
    that, the earliest the records allow (:func:`_raise_due_time`); both are reported as anomalies.

    ``budget``: when issuer calls may start (none given: no limit); the due tokens not tried for
    lack of time keep their records (``deferred``) for the next pass."""
    from rotator.core.revocation_rule import CLOCK_SLACK

    budget = budget or _Budget(None, env.clock, keep_ms=0)
    report = _RevokeReport()
    now = env.clock.now()
    # finishSecret records at most its own now + _MAX_INVOCATION + grace, rounded up to the second
    # (_rfc3339): from any later now, the 15 minutes the bound allows cover that, compared as written.
    latest = _ceil_second(now + target.policy.grace + max(CLOCK_SLACK, _MAX_INVOCATION))
    due: list[str] = []
    for token_id, text in _revocation_records(target.view.tags).items():
        when = _parse_time(text)
        if when is None:
            logger.error("revoke-expired: tag %s%s of %s holds %r, not an RFC 3339 time; not revoking it",
                         REVOKE_TAG_PREFIX, token_id, target.view.arn, text)  # fmt: skip
            report.failed.append(token_id)
        elif when > latest:
            _bound_due_time(target, token_id, text, latest, report)
            report.waiting += 1
        elif when <= now:
            due.append(token_id)
        else:
            report.waiting += 1
    if not due:
        return report
    holders = {current.token_id: CURRENT}
    pending_version = target.view.version_with(PENDING)
    if pending_version is not None:
        pending = _lenient(read_stage(target.api, target.view.arn, PENDING, target.where, version_id=pending_version))
        if pending is not None:
            holders.setdefault(pending.token_id, PENDING)
    report.held.update(holders)
    # The tags above were read before the stages (DescribeSecret, then AWSCURRENT and AWSPENDING). A
    # finishSecret in between (Secrets Manager's retry, running beside this invocation) records a new due
    # time for the token it replaces and then moves AWSCURRENT off it: by the old tag that token would be
    # revoked with no grace after its successor's publication. finishSecret writes the record before it
    # moves, so the tags read again now, after the stages, hold every record of a move the stages show.
    try:
        fresh = _describe(target.api, target.view.arn, target.where)
        if fresh is None:
            raise PermanentError(f"secret {target.view.arn} no longer exists")
    except RotatorError as exc:
        logger.error("revoke-expired: %s: cannot read its tags again before revoking, retried next time: %s",
                     target.view.arn, exc)  # fmt: skip
        report.failed += due
        return report
    target.view = fresh
    try:  # the labels as they are now too: a person may have moved AWSCURRENT back meanwhile (a rollback)
        holders = {**_label_holders(target), **holders}
    except RotatorError as exc:
        logger.error("revoke-expired: %s: cannot read AWSCURRENT and AWSPENDING again before revoking, retried "
                     "next time: %s", target.view.arn, exc)  # fmt: skip
        report.failed += due
        return report
    report.held.update(holders)
    records_now = _revocation_records(fresh.tags)
    still_due = []
    due_at: dict[str, datetime] = {}
    for token_id in due:
        when = _parse_time(records_now[token_id]) if token_id in records_now else None
        if when is not None and when <= now:
            still_due.append(token_id)
            due_at[token_id] = when
        elif when is not None:  # recorded again since, with a later time
            report.waiting += 1
        elif token_id in records_now:  # edited since into something that is not a time
            report.failed.append(token_id)
        # (no record any more: another invocation revoked it and dropped the record meanwhile)
    due = still_due
    if not due:
        return report
    try:
        tokens = _issuer_call(partial(issuer.list_tokens, current.value), "list tokens", target, issuer, env, budget)
        report.listing = tokens
        records = _VersionRecords(target)
    except _OutOfTime as exc:
        report.listing_problem = "out of time"
        _defer(target, report, due, holders, exc)
        return report
    except RotatorError as exc:
        logger.error("revoke-expired: %s: cannot read the records to check the claims, retried next time: %s",
                     target.view.arn, exc)  # fmt: skip
        if report.listing is None:
            report.listing_problem = "failed"
        report.failed += due
        return report
    from rotator.core.revocation_rule import check_revocable

    for index, token_id in enumerate(due):
        if token_id in holders:  # AWSCURRENT or AWSPENDING: the holder check decides, no lookup needed
            logger.warning("revoke-expired: token %s is AWSCURRENT or AWSPENDING of %s; not revoking it",
                           token_id, target.view.arn)  # fmt: skip
            report.skipped.append(token_id)
            continue
        try:
            tokens = _issuer_call(partial(with_unlisted, issuer, tokens, token_id, current.value),
                                  f"look up token {token_id}", target, issuer, env, budget)  # fmt: skip
            report.listing = tokens
        except _OutOfTime as exc:
            _defer(target, report, due[index:], holders, exc)
            break
        except RotatorError as exc:
            logger.error("revoke-expired: token %s of %s: cannot look it up, retried next time: %s%s",
                         token_id, target.view.arn, exc, f" (fix: {exc.hint})" if exc.hint else "")  # fmt: skip
            report.failed.append(token_id)
            continue
        claim = records.claim(token_id, tokens)
        floor: datetime | None = None
        try:
            revocable = check_revocable(claim, tokens, [], now)
            if revocable:  # the rule found it listed and active
                floor = records.revocable_from(claim, next(t for t in tokens if t.token_id == token_id))
        except NeedsAttention as exc:
            logger.error("revoke-expired: NEEDS ATTENTION: %s (fix: %s)", exc, exc.hint)
            _mark_refused(target, token_id)
            report.refused.append(token_id)
            continue
        # A tag's time earlier than the records allow is not one finishSecret wrote (anyone with
        # TagResource can write one): the token waits for the records' time. CLOCK_SLACK: the function's
        # clock against Secrets Manager's, as for the upper bound.
        if floor is not None and due_at[token_id] < floor - CLOCK_SLACK:
            _raise_due_time(target, token_id, records_now[token_id], floor, report)
            if floor > now:
                report.waiting += 1
                continue
        if revocable:
            # The last look at the labels before the revocation: the lookups above may have taken minutes, and a
            # rollback (update-secret-version-stage moving AWSCURRENT back to this token's version) in them
            # would leave AWSCURRENT holding a revoked token.
            try:
                now_held = _label_holders(target)
            except RotatorError as exc:
                logger.error("revoke-expired: token %s of %s: cannot read AWSCURRENT and AWSPENDING again before "
                             "revoking it, retried next time: %s", token_id, target.view.arn, exc)  # fmt: skip
                report.failed.append(token_id)
                continue
            if token_id in now_held:
                logger.warning("revoke-expired: token %s is %s of %s now (moved there during this pass); not "
                               "revoking it", token_id, now_held[token_id], target.view.arn)  # fmt: skip
                holders.update(now_held)
                report.held.update(now_held)
                report.skipped.append(token_id)
                continue
            try:
                _issuer_call(partial(issuer.revoke, token_id, current.value), f"revoke {token_id}", target, issuer,
                             env, budget)  # fmt: skip
            except _OutOfTime as exc:
                _defer(target, report, due[index:], holders, exc)
                break
            except RotatorError as exc:
                logger.error("revoke-expired: token %s of %s: revocation failed, retried next time: %s",
                             token_id, target.view.arn, exc)  # fmt: skip
                report.failed.append(token_id)
                continue
        env.checkpoint("revoked")
        try:
            _untag(target, REVOKE_TAG_PREFIX + token_id)
        except RotatorError as exc:  # revoked all the same; revoking again next time is harmless
            logger.warning("revoke-expired: token %s is revoked but its record stays: %s", token_id, exc)
        logger.info("revoke-expired: revoked token %s of %s (grace over)%s", token_id, target.view.arn,
                    "" if revocable else "; the issuer had revoked it already")  # fmt: skip
        report.revoked.append(token_id)
    return report


def _sweep_orphans(target: _Target, issuer: Issuer, current: TokenRecord, env: _Env, budget: _Budget,
                   report: _RevokeReport, recorded: set[str]) -> None:  # fmt: skip
    """The scheduled run's orphan sweep: revoke the live tokens this function minted for a run whose
    version has no staging label at all and that no labelled version holds: a rotation cancelled
    (``cancel-rotate-secret``, its AWSPENDING removed, as AWS says to) or abandoned. createSecret sweeps
    such tokens only before it mints (:meth:`_Rotation._sweep`), and a secret whose rotation was turned
    off never runs it again. Failures are reported, not raised.

    Revoked only what rotator's own records prove it minted (:func:`_minted_for_runs`: the version
    history and the issuer's description, never a tag or payload alone), and never a token that is
    ``current``, in ``recorded`` (the revocation records read before this pass) or still recorded now,
    or named by a ``rotator:attention:`` tag (a person decides), nor one whose value (as its run's
    version holds it) an AWSCURRENT or AWSPENDING version holds under another token's id (a payload
    edited: logged as an anomaly, as is the same under another label). Not yet, while:

    - a createSecret may still be storing it: a version under rotation carries AWSPENDING (every step
      starts only on a version that has it; finishSecret moves AWSCURRENT onto the version before it
      removes AWSPENDING), but someone may remove the label while a createSecret runs, whose PutSecretValue
      then labels the version again. That invocation ended within :data:`_MAX_INVOCATION` of the mint: the
      token waits that long after its issuer's ``created_at`` (plus the issuer's clock slack); a token
      whose issuer gives no creation time is reported, never revoked here;
    - it may have been AWSCURRENT once (a version moved back by hand): as for a recorded revocation
      (:meth:`_VersionRecords.revocable_from`), not before grace after the creation of the first version
      created after its own, which no supersession can precede; and, when another labelled version
      holds its value under another id (AWSCURRENT once, now AWSPREVIOUS: finishSecret recorded the
      revocation of that other id, not of this token), not before grace after the first version
      created after that one;
    - a finishSecret may still be moving AWSCURRENT onto its version (:func:`_finish_under_way`).

    ``report.listing`` (the pass's own listing) is used when there is one; a pass whose listing failed
    is not listed again (one issuer that does not answer costs its share of the time once)."""
    from rotator.config.timefmt import as_utc
    from rotator.core.revocation_rule import CLOCK_SLACK

    tokens = report.listing
    if tokens is None:
        if report.listing_problem is not None:
            report.sweep = report.listing_problem
            return
        try:
            tokens = _issuer_call(partial(issuer.list_tokens, current.value), "list tokens", target, issuer, env,
                                  budget)  # fmt: skip
        except _OutOfTime as exc:
            logger.warning("revoke-expired: %s: orphan sweep left for the next pass (%s)", target.view.arn, exc)
            report.sweep = "out of time"
            return
        except RotatorError as exc:
            logger.error("revoke-expired: %s: orphan sweep: cannot list the issuer's tokens, retried next time: %s",
                         target.view.arn, exc)  # fmt: skip
            report.sweep, report.sweep_error = "failed", REDACTOR.redact(str(exc))
            return
    now = env.clock.now()
    keep = {current.token_id, *recorded, *_revocation_records(target.view.tags), *_attention_ids(target.view.tags)}
    try:
        found, records = _minted_for_runs(target, tokens, keep, now, "revoke-expired")
        if not found or records is None:
            report.sweep = "done"
            return
        # The labels and what each labelled version holds, read now (after the listing): a version
        # labelled, or a token a labelled version holds (a value copied into a new version), is kept.
        fresh, labelled = _labelled_records(target)
        held = {record.token_id for record in labelled.values()}
        finishing = _finish_under_way(fresh, labelled, now)
    except RotatorError as exc:
        logger.error("revoke-expired: %s: orphan sweep: cannot read the secret's versions, retried next time: %s",
                     target.view.arn, exc)  # fmt: skip
        report.sweep, report.sweep_error = "failed", REDACTOR.redact(str(exc))
        return
    report.sweep = "done"
    out_of_time: _OutOfTime | None = None  # once no issuer call may start, the orphans due wait for the next pass
    for info, run in found:
        if run in fresh.stages or info.token_id in held:
            continue
        # By the id alone, a token whose value a labelled version holds under another token's id (its
        # payload edited) looked unheld: it was revoked inside its grace, or as AWSCURRENT's value.
        try:
            in_use, superseded = _held_by_value("revoke-expired", target, info, run, fresh, labelled, records, now)
        except RotatorError as exc:
            logger.error("revoke-expired: %s: token %s, minted for version %s, which has no label: whether a labelled "
                         "version holds its value cannot be told (%s); not revoked, retried next time",
                         target.view.arn, info.token_id, run, exc)  # fmt: skip
            report.orphans.append(info.token_id)
            report.orphans_left.append(info.token_id)
            continue
        if in_use:
            continue
        report.orphans.append(info.token_id)
        if finishing is not None:
            logger.info("revoke-expired: %s: token %s, minted for version %s, which has no label, is an orphan, but "
                        "a finishSecret may still be moving AWSCURRENT off token %s (its revocation was recorded "
                        "lately) onto that version: not revoked yet", target.view.arn, info.token_id, run,
                        finishing)  # fmt: skip
            report.orphans_waiting.append(info.token_id)
            report.waiting += 1
            continue
        if info.created_at is None:
            logger.error("revoke-expired: %s: token %s, minted for version %s, which has no label: an orphan, but "
                         "the issuer gives no creation time, so a createSecret may still be storing it; not revoked "
                         "(fix: revoke it yourself once no rotation of the secret runs)", target.view.arn,
                         info.token_id, run)  # fmt: skip
            report.orphans_left.append(info.token_id)
            continue
        revocable = as_utc(info.created_at) + _MAX_INVOCATION + CLOCK_SLACK
        successor = records.created_after(run)
        if successor is not None:
            revocable = max(revocable, successor + target.policy.grace)
        if superseded is not None:
            revocable = max(revocable, superseded)
        if revocable > now:
            logger.info("revoke-expired: %s: token %s, minted for version %s, which has no label, is an orphan: "
                        "revoked after %s", target.view.arn, info.token_id, run, _rfc3339(revocable))  # fmt: skip
            report.orphans_waiting.append(info.token_id)
            report.waiting += 1
            continue
        try:
            if out_of_time is not None:
                raise out_of_time
            _issuer_call(partial(issuer.revoke, info.token_id, current.value), f"revoke {info.token_id}", target,
                         issuer, env, budget)  # fmt: skip
        except _OutOfTime as exc:
            out_of_time = exc
            logger.warning("revoke-expired: %s: orphan token %s left for the next pass (%s)", target.view.arn,
                           info.token_id, exc)  # fmt: skip
            report.orphans_left.append(info.token_id)
            report.deferred.append(info.token_id)
            continue
        except RotatorError as exc:
            logger.error("revoke-expired: %s: orphan token %s: revocation failed, retried next time: %s",
                         target.view.arn, info.token_id, exc)  # fmt: skip
            report.orphans_left.append(info.token_id)
            report.failed.append(info.token_id)
            continue
        logger.warning("revoke-expired: revoked token %s of %s, minted for version %s, which has no label (a rotation "
                       "cancelled or abandoned): an orphan", info.token_id, target.view.arn, run)  # fmt: skip
        report.orphans_revoked.append(info.token_id)
        report.revoked.append(info.token_id)


def _held_under_other_ids(target: _Target, info: TokenInfo, run: str, labelled: Mapping[str, TokenRecord]) -> list[str]:
    """The labelled versions (of ``labelled``) that hold the value of ``info``, as its run's version
    ``run`` holds it, under another token's id: a payload written again with an edited ``token_id``.
    Values are compared by digest and never shown. Empty when the run's version holds no value of
    that token (never stored, or deleted since): then only the ids tell."""
    own = _lenient(read_stage(target.api, target.view.arn, None, target.where, version_id=run))
    if own is None or own.token_id != info.token_id:
        return []
    mine = value_sha256(own.value)
    return [version for version, record in labelled.items()
            if record.token_id != info.token_id and value_sha256(record.value) == mine]  # fmt: skip


def _held_by_value(step: str, target: _Target, info: TokenInfo, run: str, fresh: SecretView,
                   labelled: Mapping[str, TokenRecord], records: _VersionRecords,
                   now: datetime) -> tuple[bool, datetime | None]:  # fmt: skip
    """How the sweeps (``step``: the scheduled one's or createSecret's) treat ``info``, minted for ``run``,
    whose own version has no label, when a labelled version holds its value under another token's id
    (:func:`_held_under_other_ids`, whose RotatorError is raised): ``(True, None)``, kept, while such a
    version is AWSCURRENT or AWSPENDING; else ``(False, t)``: not revoked before ``t``, grace after the
    creation of the first version created after each such version (finishSecret recorded the revocation
    of the other id when it superseded that version, not of this token); ``(False, None)``: none holds
    it so. The anomaly is logged once a call, never with the value. ``fresh``, ``labelled``: read after
    ``records`` and after the read of the labels of ``run``."""
    holders = _held_under_other_ids(target, info, run, labelled)
    if not holders:
        return False, None
    in_use = any(CURRENT in fresh.stages[v] or PENDING in fresh.stages[v] for v in holders)
    logger.error("%s: %s: ANOMALY: the value of token %s (minted for version %s) is held by %s under another "
                 "token's id (%s): a payload edited; %s (fix: find who wrote it, CloudTrail's PutSecretValue, and "
                 "put the value back under token_id %s)", step, target.view.arn, info.token_id, run,
                 ", ".join(f"version {v} ({'/'.join(fresh.stages[v])})" for v in holders),
                 ", ".join(sorted({labelled[v].token_id for v in holders})),
                 "the token is kept while that version is AWSCURRENT or AWSPENDING" if in_use else
                 "the token is revoked once grace has passed since that version was superseded",
                 info.token_id)  # fmt: skip
    if in_use:
        return True, None
    bound = now
    for holder in holders:  # superseded no sooner than the version created after it
        # One created after the listing of versions has no such version among them: the next read's has.
        replaced = records.created_after(holder) if holder in records.version_ids else None
        bound = max(bound, replaced + target.policy.grace if replaced is not None else now + _MAX_INVOCATION)
    return False, bound


#: Set to 1 to also print CloudWatch Embedded Metric Format lines (docs/aws-lambda.md#compliance).
EMF_ENV = "ROTATOR_EMF"
#: A recorded revocation this long past its time (the schedule's tick and retries) is overdue.
OVERDUE_SLACK_S = 3600


def _log_compliance(target: _Target, issuer: Issuer, current: TokenRecord, records: Mapping[str, str],
                    report: _RevokeReport, now: datetime) -> None:
    """One JSON compliance line per bootstrapped secret on stdout (age against max_age, overdue
    revocations, revocation times later than rotator writes, the orphans the sweep found and revoked or
    could not, a next rotation later than the token's expiry - grace), and with ``ROTATOR_EMF=1`` an Embedded
    Metric Format line, so CloudWatch alarms need no code. A secret without a token yet has no line
    (docs/aws-lambda.md): callers skip it. A secret the run had no time for: :func:`_log_not_evaluated`."""
    policy = target.policy
    max_age = policy.max_age if policy.max_age is not None else policy.lifetime
    age = (now - current.created_at).total_seconds()
    # A record of the token AWSCURRENT (or AWSPENDING) holds is never acted on (revoke-expired skips it):
    # a finishSecret that failed after recording it (a move back, a label cleared meanwhile) leaves it.
    # Reported as overdue, it read as "revoke this token" of the one token that works.
    held = {current.token_id, *report.held}
    recorded_held = [t for t in records if t in held]
    overdue = [t for t, text in records.items() if t not in report.revoked and t not in held
               and ((when := _parse_time(text)) is None or when.timestamp() + OVERDUE_SLACK_S < now.timestamp())]
    # The expires_at recorded for a token that never expires is the one rotator asked for, not the
    # issuer's: the token outlives any schedule, so a late rotation cuts nothing short.
    late = not _mints_without_expiry(issuer) and _rotation_after_expiry(target.view, current, policy.grace)
    # An orphan this run could not revoke (failed, out of time, no creation time), or a sweep that did not
    # run, is no compliance: the token stays valid for as long as it lives. One waiting for its time is,
    # as a recorded revocation waiting for its grace is. A token that expires before its scheduled
    # replacement (plus grace) is none either: its clients fail then.
    compliant = (age <= max_age.total_seconds() and not overdue and not report.anomalies
                 and not report.orphans_left and report.sweep == "done" and not late)  # fmt: skip
    next_rotation = target.view.next_rotation
    line = {"rotator_compliance": {
        "policy": policy.name, "secret": target.view.arn, "evaluated": True, "token_id": current.token_id,
        "age_s": int(age), "max_age_s": int(max_age.total_seconds()),
        "overdue_revocations": len(overdue), "overdue_token_ids": overdue,
        "recorded_current_token_ids": recorded_held,
        "anomalous_revocations": len(report.anomalies), "anomalous_token_ids": report.anomalies,
        "orphan_sweep": report.sweep, "orphan_token_ids": report.orphans,
        "revoked_orphan_token_ids": report.orphans_revoked, "waiting_orphan_token_ids": report.orphans_waiting,
        "unrevoked_orphans": len(report.orphans_left), "unrevoked_orphan_token_ids": report.orphans_left,
        "next_rotation_date": rfc3339_seconds(next_rotation) if next_rotation is not None else None,
        "rotation_after_expiry": late,
        "compliant": compliant}}
    print(json.dumps(line), flush=True)
    if os.environ.get(EMF_ENV, "").strip().lower() in ("1", "true", "yes"):
        metrics = [("TokenAgeSeconds", "Seconds", age), ("TokenMaxAgeSeconds", "Seconds", max_age.total_seconds()),
                   ("OverdueRevocations", "Count", len(overdue)),
                   ("UnrevokedOrphans", "Count", len(report.orphans_left)), ("Compliant", "None", int(compliant))]
        emf: dict[str, Any] = {"_aws": {"Timestamp": int(now.timestamp() * 1000), "CloudWatchMetrics": [{
            "Namespace": "rotator", "Dimensions": [["Policy"]],
            "Metrics": [{"Name": n, "Unit": u} for n, u, _ in metrics]}]}, "Policy": policy.name}
        emf.update({n: v for n, _, v in metrics})
        print(json.dumps(emf), flush=True)


def _log_not_evaluated(secret: str, policy: str | None, left_ms: int | None) -> None:
    """The log line and compliance line of a secret the scheduled run had no time left for: nothing is
    known of it in this run, so it is not shown compliant; its records wait for a later run."""
    logger.warning("revoke-expired: secret %s not evaluated: out of time (%s ms left, %d ms kept to write the "
                   "results); its revocations wait for a later run, which starts at another secret", secret,
                   left_ms, _SAFETY_MS)  # fmt: skip
    line = {"rotator_compliance": {"policy": policy, "secret": secret, "evaluated": False,
                                   "reason": "out of time", "compliant": False}}  # fmt: skip
    print(json.dumps(line), flush=True)


def _first_of(now: datetime, count: int) -> int:
    """Where a scheduled run starts in its list of ``count`` secrets: picked from the hour of the run,
    so that every secret comes first as often as any other, whatever the schedule. An issuer that
    does not answer costs the secrets after it their time; which secrets those are changes from run
    to run, so none waits for ever behind it."""
    import random  # not on the rotation steps' path

    return random.Random(int(now.timestamp()) // 3600).randrange(count)


class _VersionRecords:
    """What this function trusts, having no journal: the secret's version history, which Secrets
    Manager keeps and no TagResource or PutSecretValue can rewrite.

    - The version ids: each rotation's ClientRequestToken is the VersionId of its AWSPENDING
      version and the run id in its token's description (``rotator:<policy>:<version id>``); the
      rule accepts a token whose issuer description carries one of them.
    - The oldest version whose payload names this policy: the token ``rotator bootstrap`` published
      before any rotation (no later write can precede it). It is the only human-made token this
      function revokes.
    - Each version's CreatedDate: a token is superseded no sooner than the version created after its
      own, so its revocation is due no sooner than grace after that (:meth:`revocable_from`).
    """

    def __init__(self, target: _Target) -> None:
        self.t = target
        listed: list[Mapping[str, Any]] = []
        request: dict[str, Any] = {"SecretId": target.view.arn, "IncludeDeprecated": True, "MaxResults": 100}
        for _page in range(_MAX_VERSION_PAGES):
            # A page may hold fewer versions than asked for while more follow (NextToken).
            with map_errors(target.where, "ListSecretVersionIds", secret_id=target.view.arn):
                answer = target.api.list_secret_version_ids(**request)
            check_version_list(target.api, target.where, answer)
            listed.extend(answer.get("Versions", []))
            if not answer.get("NextToken"):
                break
            request["NextToken"] = answer["NextToken"]
        else:
            raise TransientError(f"ListSecretVersionIds of {target.view.arn}: still more after "
                                 f"{_MAX_VERSION_PAGES} pages", hint="retried on the next invocation")
        versions = sorted(listed, key=lambda v: v.get("CreatedDate") or _LONG_AGO)
        self.version_ids = [str(v["VersionId"]) for v in versions]
        self._created = {str(v["VersionId"]): v.get("CreatedDate") for v in versions}
        self._bootstrap_id: str | None = None
        self._bootstrap_version: str | None = None
        self._bootstrap_at: datetime | None = None
        self._bootstrap_read = False

    def claim(self, token_id: str, tokens: list[TokenInfo]) -> Claim:
        from rotator.core.revocation_rule import Claim

        source = f"tag {REVOKE_TAG_PREFIX}{token_id} of {self.t.view.arn}"
        info = next((t for t in tokens if t.token_id == token_id), None)
        if info is not None and self.t.policy.tag_prefix() in info.description:
            minted_by = [v for v in self.version_ids if self.may_have_minted(v, info)]
            return Claim(token_id, self.t.policy.name, minted_by=minted_by, source=source)
        bootstrapped = token_id == self.bootstrap_id()
        return Claim(token_id, self.t.policy.name, bootstrapped=bootstrapped, source=source,
                     recorded_at=self._bootstrap_at if bootstrapped else None)

    def may_have_minted(self, version: str, info: TokenInfo) -> bool:
        """Whether ``version`` of this secret can be the run that minted ``info``: it exists, and the
        token is not older than it (a rotation's version exists before its createSecret mints; a
        version given an older token's run id later, by RotateSecret or PutSecretValue with a chosen
        ClientRequestToken, is not that token's run). The issuer's clock may run CLOCK_SLACK ahead."""
        from rotator.config.timefmt import as_utc
        from rotator.core.revocation_rule import CLOCK_SLACK

        if version not in self._created:
            return False
        created = self._created[version]
        if not isinstance(created, datetime) or info.created_at is None:
            return True
        return as_utc(info.created_at) >= as_utc(created) - CLOCK_SLACK

    def created_after(self, version: str) -> datetime | None:
        """The CreatedDate of the first version created after ``version`` (one created in the same instant
        counts: CreatedDate may have whole seconds only), in UTC; None when the records show none. A token
        of ``version`` that was ever AWSCURRENT was superseded no sooner. Without a CreatedDate of
        ``version`` itself, the newest version's: the safe side."""
        from rotator.config.timefmt import as_utc

        own = self._created.get(version)
        dates = {v: as_utc(c) for v, c in self._created.items() if v != version and isinstance(c, datetime)}
        if not isinstance(own, datetime):
            return max(dates.values(), default=None)
        return min((c for c in dates.values() if c >= as_utc(own)), default=None)

    def bootstrap_id(self) -> str | None:
        if not self._bootstrap_read:
            self._bootstrap_read = True
            if len(self.version_ids) >= BOOTSTRAP_RECORD_MAX_VERSIONS:
                logger.warning(
                    "%s has %d versions: Secrets Manager may have deleted its oldest, so its oldest version is no "
                    "proof of the bootstrapped token; a claim on that token is refused (revoke it yourself if it "
                    "must go)", self.t.view.arn, len(self.version_ids))  # fmt: skip
                return None
            for version in self.version_ids:  # oldest first
                # Only a payload naming this policy: `rotator bootstrap` always writes it. Skipped: a
                # placeholder (Terraform's, say), and the values of a secret that existed before rotator
                # (adopted), which may look like rotator's (a token and a token_id) and name no policy or
                # another: their token is another tool's or person's, never revoked here.
                oldest = _lenient(read_stage(self.t.api, self.t.view.arn, None, self.t.where, version_id=version))
                if oldest is not None and oldest.policy == self.t.policy.name:
                    self._bootstrap_id, self._bootstrap_version = oldest.token_id, version
                    created = self._created.get(version)
                    self._bootstrap_at = created if isinstance(created, datetime) else None
                    break
        return self._bootstrap_id

    def revocable_from(self, claim: Claim, info: TokenInfo) -> datetime:
        """The earliest time these records let the claimed token (a claim the rule accepted) be revoked:
        grace after the creation of the first version created after the token's own version (its run's
        version; for the bootstrapped token, the bootstrap's). The version that replaced the token was
        created no earlier, and published no earlier than created, so this never comes before the due
        time finishSecret records; and no tag can move it. A version created in between (a rotation
        abandoned, a dry run) makes it earlier, never later.

        NeedsAttention when the records show no such version (none created after the token's own: a
        version moved back to AWSCURRENT by hand, or versions Secrets Manager deleted beyond its limit),
        or no CreatedDate: when the token was superseded is then unknown, and a tag's time alone must
        not let it be revoked early. Refused, it waits for a person, who can tell."""
        from rotator.config.timefmt import as_utc
        from rotator.core.revocation_rule import carries_tag

        if claim.bootstrapped:
            own = [self._bootstrap_version] if self._bootstrap_version is not None else []
        else:
            own = [v for v in claim.minted_by if carries_tag(info.description, self.t.policy.tag(v))]
        # version_ids is in the order of creation. Versions created in the same instant (CreatedDate may
        # have whole seconds only) keep the order Secrets Manager lists them in: whichever way that falls,
        # the bound is the same time, or the next version's, or none (refused), never an earlier one.
        at = [i for i, v in enumerate(self.version_ids) if v in own and isinstance(self._created.get(v), datetime)]
        if at:
            # the last of them (a description naming several runs, not seen in practice): the safe side
            later = [c for v in self.version_ids[max(at) + 1:] if isinstance(c := self._created.get(v), datetime)]
            if later:
                return as_utc(later[0]) + self.t.policy.grace
        raise NeedsAttention(
            f"token {claim.token_id} ({claim.source}): the versions of {self.t.view.arn} show no version created "
            "after the token's own, so not when it was superseded; refusing to revoke it on the tag's time alone",
            hint="check when the token stopped being AWSCURRENT (CloudTrail's UpdateSecretVersionStage); revoke it "
            "yourself once its grace has passed, then remove the tag",
        )


def _revoke_tag_key(token_id: str, step: str, arn: str, version: str | None = None, *, minted: bool = False) -> str:
    """The tag key that records ``token_id``'s revocation; PermanentError when Secrets Manager cannot
    hold it (at most 128 characters of letters, digits, spaces and ``_.:/=+-@``): an InfluxDB 3
    token's id is a name, a person's or ``<token_name_prefix>-<ClientRequestToken>``. ``minted``: the
    token this rotation just minted (its revocation is the next rotation's record); ``version``: the
    rotation's version, whose AWSPENDING label the fix clears first."""
    key = REVOKE_TAG_PREFIX + token_id
    if re.match(_TAG_KEY, key):
        return key
    room = 128 - len(REVOKE_TAG_PREFIX)
    rule = f"at most {room} characters of letters, digits, spaces and _.:/=+-@"
    clear = f"{_HINT_CLEAR.format(secret=arn, version=version)}; then " if version else ""
    if minted:
        raise PermanentError(
            f"{step}: the new token's id {token_id!r} cannot be part of a secret tag key ({rule}), where the next "
            "rotation records its revocation; the new token was revoked",
            hint=f"{clear}shorten the issuer's token_name_prefix so that <prefix>-<ClientRequestToken> fits",
        )
    raise PermanentError(
        f"{step}: the current token's id {token_id!r} cannot be part of a secret tag key ({rule}), where rotator "
        "records the revocation of the token it replaces",
        hint=f"{clear}make a token whose name fits and put it into the secret with "
        "`rotator bootstrap POLICY --replace --token-file FILE --token-id NAME --reason TEXT` "
        f"(docs/aws-lambda.md); then rotate {arn} again, and revoke the old token yourself",
    )


def _check_tag_room(view: SecretView, step: str, keys: set[str]) -> None:
    """PermanentError when tagging ``view`` with ``keys`` would pass Secrets Manager's limit.

    Refused claims stay on the secret as ``rotator:attention:<id>`` tags until a person removes
    them, so they are what usually fills it; the error says so and how to clear them.
    """
    held = [k for k in view.tags if not k.startswith("aws:")]
    added = sorted(keys.difference(view.tags))
    if len(held) + len(added) <= MAX_TAGS:
        return
    attention = sorted(k for k in held if k.startswith(ATTENTION_TAG_PREFIX))
    remove = f"aws secretsmanager untag-resource --secret-id {view.arn} --tag-keys KEY ..."
    keep = (f"keep {REVOKE_TAG_PREFIX}* (the records of tokens still to revoke: without one a token is never "
            f"revoked), {MANAGED_BY_KEY}, {POLICY_KEY} and {POLICY_TAG}")
    hint = (
        f"{len(attention)} of them are {ATTENTION_TAG_PREFIX}<token id> tags of revocation claims rotator "
        f"refused ({', '.join(attention[:3])}{', ...' if len(attention) > 3 else ''}): check each token "
        f"(docs/aws-lambda.md) and remove the tag with `{remove}`; {keep}"
        if attention else f"remove tags the secret no longer needs with `{remove}`; {keep}"
    )
    raise PermanentError(
        f"{step}: secret {view.arn} has {len(held)} tags and this rotation needs {len(added)} more "
        f"({', '.join(added)}); Secrets Manager allows {MAX_TAGS}",
        hint=f"{hint}. Then Secrets Manager's next attempt of this rotation goes on where it stopped",
    )


def _retag(view: SecretView, *, drop: str | None = None, add: Mapping[str, str] | None = None) -> None:
    """Keep ``view.tags`` what the secret holds after this invocation's own TagResource/UntagResource."""
    view.tags = {**{k: v for k, v in view.tags.items() if k != drop}, **(add or {})}


def _mark_refused(target: _Target, token_id: str) -> None:
    """Swap the claim for a visible ``rotator:attention:<id>`` tag: reported once, never retried."""
    attention, value = ATTENTION_TAG_PREFIX + token_id, "refused: not provably this policy's token"
    try:
        _tag(target, {attention: value})
        _untag(target, REVOKE_TAG_PREFIX + token_id)
    except RotatorError as exc:
        logger.warning("revoke-expired: could not mark the refused claim on token %s: %s", token_id, exc)


def _revoke_expired_action(event: Mapping[str, Any], config: PolicyBundle, env: _Env) -> dict[str, Any]:
    """``{"action": "revoke-expired"[, "SecretId": ...]}``: one secret, or every one in the file.

    Within the invocation's time (:class:`_Budget`, keeping :data:`_SAFETY_MS` to write the results):
    the secrets it has no time left for are reported (``not_evaluated``, a log line and a compliance
    line each) and the invocation fails, as for any failure. The list starts at another secret each
    hour (:func:`_first_of`); every secret of it is read first, and done once (:func:`_each_secret_once`)."""
    secret_id = event.get("SecretId")
    if secret_id is not None and not isinstance(secret_id, str):
        raise PermanentError("revoke-expired: SecretId must be a string")
    if secret_id:
        _secret_id(secret_id, "revoke-expired")
    work: list[tuple[str, _Via | None]]
    if secret_id:
        work = [(secret_id, None)]
    else:
        # Every secret a policy's store names, read with that store's client, each once and under the
        # policy the secret names, as its steps are (_policy_of). Several policies may name one secret;
        # under any other one its records would not prove its tokens, and a refused claim loses its record.
        work = [(s.secret_id, (p, s)) for p in config.policies if len(p.stores) == 1 for s in _aws_stores(p)]
        if len(work) > 1:
            first = _first_of(env.clock.now(), len(work))
            work = work[first:] + work[:first]
    budget = _Budget(env.context, env.clock, keep_ms=_SAFETY_MS)
    total = _RevokeReport()
    errors: list[str] = []
    fixes: list[str] = []  # the hints of those errors: a secret scheduled for deletion is not fixed by retrying

    def failed(sid: str, exc: RotatorError, cause: BaseException | None = None) -> None:
        logger.error("revoke-expired: secret %s: %s%s", sid, REDACTOR.redact(str(exc)),
                     f" (fix: {exc.hint})" if exc.hint else "", exc_info=cause)  # fmt: skip
        errors.append(f"{sid}: {REDACTOR.redact(str(exc))}")
        if exc.hint and exc.hint not in fixes:
            fixes.append(exc.hint)

    secrets = _each_secret_once(work, env, budget, failed)
    seen: set[str] = set()  # the ARNs done (or failed) in this run
    not_evaluated: list[str] = []
    unswept: list[str] = []  # the secrets whose orphan sweep had no time left
    for index, (sid, via, read) in enumerate(secrets):
        if read is not None and read[0].arn in seen:
            continue  # an earlier secret's policy found this one through its own client (_target): done
        shown = read[0].arn if read is not None else sid
        if not budget.begin(len(secrets) - index):
            not_evaluated.append(shown)
            _log_not_evaluated(shown, via[0].name if via else None, budget.left_ms())
            continue
        try:
            if via is None:
                target = _resolve(config, sid, env)
            else:
                view, api = read or _read(sid, env, via)
                if view.arn in seen:
                    continue
                seen.add(view.arn)
                target = _target(config, sid, view, api, via, env, sole=via[0])
                if target.view.arn != view.arn:  # its policy's own client found it elsewhere (_target)
                    if target.view.arn in seen:
                        continue
                    seen.add(target.view.arn)
            records = _revocation_records(target.view.tags)
            if records:
                current = TokenRecord.from_payload(*_current_payload(target))
                issuer = registry.build_issuer(target.policy, target.policy.context(env.clock))
                report = _revoke_due(target, issuer, current, env, budget)
                # A time the pass corrected is the one the token waits for now, not the one read before (an
                # early time read as "overdue" is no overdue revocation).
                corrected = _revocation_records(target.view.tags)
                records = {**records, **{t: corrected[t] for t in report.anomalies if t in corrected}}
            else:
                held = _lenient(read_stage(target.api, target.view.arn, CURRENT, target.where))
                # No rotator token yet (no value, or a placeholder): not bootstrapped, so no line, and no
                # "compliant": false that would fire the alarms on a secret rotator does not serve yet.
                if held is None:
                    continue
                current, report = held, _RevokeReport()
                issuer = registry.build_issuer(target.policy, target.policy.context(env.clock))
            # Every pass, records or not: a rotation cancelled or abandoned leaves its token to this sweep
            # alone once rotation is off (createSecret sweeps only before it mints).
            _sweep_orphans(target, issuer, current, env, budget, report, set(records))
            _log_compliance(target, issuer, current, records, report, env.clock.now())
        except RotatorError as exc:
            failed(sid, exc)
            continue
        except Exception as exc:  # a bug, or input no check foresaw: this secret's failure, not the whole run's
            from rotator.config.inline_secrets import mask_tokens  # (a failure path: not on the cold start)

            # masked by shape too: the redactor knows only the values of live Secrets, and no check foresaw this
            failed(sid, RotatorError(f"unexpected {type(exc).__name__}: {mask_tokens(str(exc))}",
                                     hint=_HINT_UNEXPECTED), exc)
            continue
        if report.sweep_error is not None:
            errors.append(f"{target.view.arn}: orphan sweep: {report.sweep_error}")
        if report.sweep == "out of time":
            unswept.append(target.view.arn)
        total.revoked += report.revoked
        total.skipped += report.skipped
        total.failed += report.failed
        total.refused += report.refused
        total.deferred += report.deferred
        total.waiting += report.waiting
    summary = {"revoked": total.revoked, "skipped": total.skipped, "failed": total.failed,
               "refused": total.refused, "waiting": total.waiting, "deferred": total.deferred,
               "not_evaluated": not_evaluated}  # fmt: skip
    logger.info("revoke-expired: %s", json.dumps(summary))
    late = [f"{len(not_evaluated)} secret(s) not evaluated ({', '.join(not_evaluated)})"] if not_evaluated else []
    late += [f"{len(total.deferred)} due revocation(s) not tried"] if total.deferred else []
    late += [f"orphan sweep of {len(unswept)} secret(s) not run ({', '.join(unswept)})"] if unswept else []
    if late:
        fixes.append("out of time: the next scheduled run tries again, starting at another secret; if this repeats, "
                     "fix the issuers that fail or time out (see the log), raise the function's timeout, or lower "
                     "the issuers' timeout_s")
    if total.refused:
        problems = len(total.failed) + len(errors)
        raise NeedsAttention(
            f"revoke-expired: refused to revoke {', '.join(total.refused)}: not provably a token this function "
            "minted for the policy, nor the bootstrapped one, or not provably past its grace (see the log)"
            + (f"; also {problems} failure(s)" if problems else "") + "".join(f"; {text}" for text in late),
            hint=f"see the function's log; the claims are now tags {ATTENTION_TAG_PREFIX}<id> on the secret: "
            "check who wrote them, revoke a token yourself only if it must go, then remove the tag",
        )
    if total.failed or errors or late:
        failures = len(total.failed) + len(errors)
        detail = "; ".join([*errors, *(f"token {t}" for t in total.failed), *(f"out of time: {t}" for t in late)])
        raise TransientError(
            f"revoke-expired: {f'{failures} failure(s): ' if failures else ''}{detail}",
            hint="; ".join([*fixes, "the next scheduled run retries; check the issuer and the function's log"]),
        )
    return summary


#: A secret the scheduled run reads first: the id a store names it by, that store's policy (None: the
#: event's SecretId), and what DescribeSecret answered with that store's client (None: not read yet).
_Secret = tuple[str, _Via | None, tuple[_Described, SecretsManagerAPI] | None]


def _each_secret_once(work: Sequence[tuple[str, _Via | None]], env: _Env, budget: _Budget,
                      failed: Callable[[str, RotatorError], None]) -> list[_Secret]:  # fmt: skip
    """The scheduled run's secrets, each once, read first (DescribeSecret: no issuer call) while the
    invocation has time left.

    Several policies may name one secret, by its name or its ARN, through clients of their own: only
    the ARN DescribeSecret answers tells. Read first, each secret is done once (a repeat is never
    reported "not evaluated" after the run evaluated it), shares the time with the secrets really left
    (:meth:`_Budget.begin`), and is named by its ARN in every line, whether the run gets to it or not.
    One the invocation has no time even to read keeps the id it is configured with (a repeat of that
    id through an equal store, or of an ARN read, is left out). One that cannot be read is reported
    through ``failed`` and left out; the event's own SecretId is read when its turn comes. (A secret is
    judged from this read when its turn comes; :func:`_revoke_due` reads its tags again before revoking.)"""
    secrets: list[_Secret] = []
    arns: set[str] = set()
    unread: set[tuple[str, AwsSecretsManagerSettings | None]] = set()
    for sid, via in work:
        left = budget.left_ms()
        if via is None or (left is not None and left <= 0):
            key = (sid, via[1] if via is not None else None)
            if key not in unread and sid not in arns:
                unread.add(key)
                secrets.append((sid, via, None))
            continue
        try:
            view, api = _read(sid, env, via)
        except RotatorError as exc:
            failed(sid, exc)
            continue
        if view.arn not in arns:
            arns.add(view.arn)
            secrets.append((sid, via, (view, api)))
    return secrets


def _current_payload(target: _Target) -> tuple[Mapping[str, Any], str]:
    answer = read_stage(target.api, target.view.arn, CURRENT, target.where)
    if answer is None or answer[1] is None:
        raise PermanentError(f"secret {target.view.arn} holds no rotator token as AWSCURRENT", hint=_HINT_BOOTSTRAP)
    return answer[1], f"{target.where} version {answer[0]}"


def _lenient(answer: tuple[str, Mapping[str, Any] | None] | None) -> TokenRecord | None:
    if answer is None or answer[1] is None:
        return None
    try:
        return TokenRecord.from_payload(answer[1], where=answer[0])
    except PermanentError:
        return None


def _rfc3339(moment: datetime) -> str:
    """Whole seconds, rounded up: a due time is never earlier than the grace allows."""
    return rfc3339_seconds(_ceil_second(moment))


def _ceil_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0) + timedelta(seconds=1) if moment.microsecond else moment


def _parse_time(text: str) -> datetime | None:
    """An RFC 3339 time of a payload; None when it is not one, or has no offset (not taken as UTC)."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else None
