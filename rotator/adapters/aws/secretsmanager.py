"""aws-secretsmanager: publish the current token into an AWS Secrets Manager secret.

What rotator keeps in Secrets Manager::

    the secret            one version per publish, holding TokenRecord.payload() as SecretString
    staging labels        AWSCURRENT = the token consumers use, AWSPREVIOUS = the one before
                          (AWS moves it), AWSPENDING = only while a publish is under way
    tags                  managed-by=rotator, policy=<policy name>

Publish, with ``StoreState.version`` = the VersionId that carries AWSCURRENT::

    1. DescribeSecret                  AWSCURRENT must still be on the version PLAN read
                                       (else ConflictError); AWSPENDING must not sit on
                                       another version (an unfinished rotation, see below)
    2. PutSecretValue                  a fresh ClientRequestToken ``rotator-<uuid4>`` (so the new
                                       version's id), VersionStages=[AWSPENDING]
    3. UpdateSecretVersionStage        AWSCURRENT -> the new version, RemoveFromVersionId = the
                                       version PLAN read: Secrets Manager refuses the move if
                                       AWSCURRENT left that version, so the move itself is the
                                       compare-and-set; the old version becomes AWSPREVIOUS
    4. UpdateSecretVersionStage        remove AWSPENDING (left on AWSCURRENT's version it is
                                       harmless, so a failure here only warns)
    5. TagResource                     only when managed-by/policy are not set yet (adopt)

A secret that does not exist is created by one CreateSecret with the payload, the tags and
``kms_key_id`` when ``secret_id`` is a name or an ARN without its 6-character suffix (a full
ARN names a secret AWS created with that random suffix, which a new secret never gets; an ARN
whose name ends like one, "-" and 6 letters or digits, may be either: rotator refuses and says
both ways out, the name as ``secret_id`` or the create-secret command); one that exists with no
value yet (made by Terraform, say) gets its first value through steps 2-4, also when it was made
between ``read_current`` and CreateSecret (CreateSecret answers ResourceExistsException), unless
its tags mark it for another policy and ``read_current`` did not see them (a ConflictError,
nothing written: the next run's ownership check decides; tags it saw passed that check, with
``adopt``). Every read names its stage (``VersionStage=AWSCURRENT``), never the default.

AWSPENDING on a version other than AWSCURRENT's means a rotation is unfinished. A version holding
a rotator payload of this same policy that is rotator's own publish, interrupted between steps 2
and 3, is not: it is ignored (the engine has rolled its token back, or runs the same publish again),
a publish of the same record finishes with that version, and any other publish's PutSecretValue
moves the label. Own means named ``rotator-...`` (a rotation function's version has the id
Secrets Manager chose), or on a secret without rotation enabled (managed, or not tagged yet while
adopted) any id, for versions put before the store named its own. Anything else (a rotation
function's version, with or without a value; someone else's value) stops the run with the message
AWS users know, "a previous rotation isn't complete", and the command that clears the label. On a
secret with rotation enabled, a publish whose move fails also drops AWSPENDING from its version
before it gives up, when Secrets Manager lets it: until it is gone, Secrets Manager starts no
rotation of the secret.

Credentials come from the standard AWS chain (environment, ``~/.aws``, container or instance
role), from ``profile``, or by assuming ``role_arn`` (refreshed before it expires). The region
is explicit (``region``, or the secret's ARN), and ``endpoint_url`` is the only endpoint used:
``AWS_ENDPOINT_URL*`` variables and profile endpoints are ignored (``ignore_configured_endpoint_urls``).
Likewise ``role_arn`` is assumed at ``sts_endpoint_url``, else at the region's STS endpoint on every
botocore version (``AWS_STS_REGIONAL_ENDPOINTS`` and a profile's ``sts_regional_endpoints`` are ignored).
Secrets Manager refuses every write to a replica (the secret as replicated into another region), so the
region must be the primary's: ``read_current`` of a replica (DescribeSecret names another PrimaryRegion)
raises :class:`ReplicaSecretError`, a ConfigError naming the primary's region, before a rotation mints; a
reader (``rotator sync``'s source, say) takes the replica's value from it.

The IAM permissions rotator's identity needs on the secret::

    secretsmanager:DescribeSecret, GetSecretValue, PutSecretValue, UpdateSecretVersionStage
    secretsmanager:CreateSecret, TagResource     (creating the secret / adopting one)
    kms:Decrypt, kms:GenerateDataKey             (on kms_key_id, when the secret uses a CMK)
    sts:AssumeRole                               (on role_arn, when set)

Every call goes through :func:`map_errors`: throttling, 5xx, timeouts and connection failures
become TransientError (after botocore's own retries, ``retry_mode``/``max_attempts``);
AccessDenied (the hint names the IAM action), KMS refusals, bad credentials, a missing secret
and other 4xx become PermanentError. Messages carry the operation, the error code and AWS's own
message (redacted); never the SDK's exception text, never a token.

botocore raises nothing for an HTTP 200 whose body is not Secrets Manager's JSON (a captive portal's page,
a catch-all server, an empty body): so every answer acted on must show what Secrets Manager always sends,
else PermanentError "the answer of <endpoint> to <operation> is not Secrets Manager's", never its body.
DescribeSecret, UpdateSecretVersionStage, CreateSecret, GetSecretValue and PutSecretValue: the secret's ARN
and Name, naming the secret asked for; GetSecretValue, PutSecretValue and CreateSecret also a VersionId (the
one asked for, or the ClientRequestToken sent, which Secrets Manager makes the VersionId; VersionStages
holding the stage asked for); ListSecretVersionIds: its Versions list; TagResource and UntagResource, which
have no body: the request id. The rotation function (rotator/runners/lambda_rotation.py) checks its own
calls' answers with the same public checks (:func:`check_answer`, :func:`check_request_id`,
:func:`check_version_list`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import reprlib
import shlex
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

from rotator.config.registry import lazy_sdk
from rotator.core.contracts import MALFORMED_HINT, AdapterContext, Store, StoreState, TokenRecord, checked_settings
from rotator.core.credentials import SETTINGS_CONFIG, SettingsValue
from rotator.core.errors import (
    ConfigError,
    ConflictError,
    MalformedPayload,
    PermanentError,
    RotatorError,
    TransientError,
    WriteBlocked,
)
from rotator.core.secret import REDACTOR

if TYPE_CHECKING:
    from pathlib import Path

    import botocore.exceptions
else:  # imported on first use: loading a policy file needs the settings model only (issue 12)
    botocore = lazy_sdk("botocore")

__all__ = [
    "CURRENT",
    "HINT_OLD_SDK",
    "MANAGED_BY",
    "MANAGED_BY_KEY",
    "OWN_VERSION_PREFIX",
    "PENDING",
    "POLICY_KEY",
    "PREVIOUS",
    "AwsSecretsManagerSettings",
    "AwsSecretsManagerStore",
    "ClientFactory",
    "PendingRotationError",
    "ReplicaSecretError",
    "SecretView",
    "SecretsManagerAPI",
    "accepts_parameter",
    "boto3_client",
    "check_answer",
    "check_request_id",
    "check_version_list",
    "client_error_code",
    "describe",
    "describe_answer",
    "map_errors",
    "quiet_sdk_wire_logs",
    "read_labelled_version",
    "read_stage",
    "secret_id_is_valid",
]

logger = logging.getLogger("rotator.adapters.aws_secretsmanager")
T = TypeVar("T")

CURRENT, PENDING, PREVIOUS = "AWSCURRENT", "AWSPENDING", "AWSPREVIOUS"
#: What the ClientRequestToken (so the VersionId) of every version this store writes starts with, a
#: UUID after it (44 characters; AWS takes 32 to 64). Secrets Manager names a rotation's version with
#: its own UUID: an AWSPENDING version named so, holding this policy's payload, is an interrupted
#: publish of this store's, also on a secret whose rotation is enabled.
OWN_VERSION_PREFIX = "rotator-"
MANAGED_BY_KEY, MANAGED_BY, POLICY_KEY = "managed-by", "rotator", "policy"

#: the name part: a secret name, with the -XXXXXX suffix AWS adds
_ARN = re.compile(
    r"^arn:aws[a-z-]*:secretsmanager:(?P<region>[a-z0-9-]+):\d{12}:secret:(?P<name>[A-Za-z0-9/_+=.@-]{1,519})\Z"
)
_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}\Z")
_REGION = re.compile(r"^[a-z]{2,}(-[a-z0-9]+)+\Z")
_ROLE_ARN = r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}\Z"  # compiled on first use: rarely set

_THROTTLING = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "RequestLimitExceeded", "SlowDown", "RequestThrottled",
    "PriorRequestNotComplete", "EC2ThrottledException", "ProvisionedThroughputExceededException",
    # botocore's standard retry mode's transient codes: the server gave up waiting for the request (HTTP 400),
    # so retrying may succeed, and a write whose answer this was is looked for in the store, not assumed undone
    "RequestTimeout", "RequestTimeoutException",
})  # fmt: skip
_BAD_CREDENTIALS = frozenset({
    "UnrecognizedClientException", "InvalidClientTokenId", "InvalidSignatureException",
    "SignatureDoesNotMatch", "IncompleteSignature", "ExpiredToken", "ExpiredTokenException",
    "MissingAuthenticationToken", "AuthFailure",
})  # fmt: skip
_KMS_CODES = frozenset(
    {
        "DecryptionFailure",
        "EncryptionFailure",
        "KMSAccessDeniedException",
        "KMSDisabledException",
        "KMSInvalidStateException",
        "KMSNotFoundException",
    }
)
_CAS_CODES = frozenset({"InvalidParameterException", "InvalidRequestException"})

_ERR_CALL = "{where}: {operation} failed: {code}{detail}"
_ERR_UNREACHABLE = "{where}: cannot reach Secrets Manager for {operation} ({cause})"
_ERR_TLS = "{where}: TLS handshake for {operation} failed (untrusted certificate, or not a TLS endpoint)"
_ERR_CONFLICT = "{where}: compare-and-set lost: expected AWSCURRENT on {expected}, it is on {actual}"
_ERR_PENDING = (
    "{where}: a previous rotation isn't complete: AWSPENDING is on version {pending}, AWSCURRENT on {current}"
)
_HINT_PENDING = (
    "finish or cancel that rotation (Secrets Manager retries a failed rotation itself); if none is running, "
    "remove the label: aws secretsmanager update-secret-version-stage --secret-id {secret} "
    "--version-stage AWSPENDING --remove-from-version-id {pending} --region {region}"
)
#: What a printed command shows for a version id it cannot show as it is (too long, control characters).
_VERSION_PLACEHOLDER = "VERSION_ID (describe-secret: the version with AWSPENDING)"
_HINT_CONFLICT = (
    "another writer moved AWSCURRENT after rotator read it: inspect it with "
    "`aws secretsmanager describe-secret --secret-id {secret} --region {region}`, then rotate again"
)
_HINT_OTHER_POLICY = (
    "two policies must not share a secret: point one of them at another secret_id; if this policy was renamed, "
    "set `adopt = true` in it for one rotation; then rotate again"
)
_HINT_RETRY = "rotator retries; check that Secrets Manager (or endpoint_url) is reachable from here"
_HINT_DENIED = "rotator's AWS identity needs {action} on {resource} (IAM policy, and the secret's resource policy)"
_HINT_KMS = (
    "rotator's AWS identity needs kms:Decrypt (reads) and kms:GenerateDataKey (writes) on the secret's KMS key{key}, "
    "allowed by the key policy; the key must be enabled"
)
_HINT_CREDENTIALS = (
    "give rotator valid AWS credentials: the standard chain (environment, ~/.aws, instance/task/Lambda role), "
    "`profile`, or `role_arn`"
)
_HINT_NOT_FOUND = "check secret_id and region (the secret may also be scheduled for deletion: restore-secret)"
_HINT_DELETED = (
    "the secret is scheduled for deletion: if that was a mistake, `aws secretsmanager restore-secret {secret}`; "
    "if not, first revoke the tokens its rotator:revoke:<token id> tags record (they are lost with the "
    "secret, and those tokens stay valid until they expire), e.g. with the issuer's own tool"
)
_HINT_AWS = "check the store settings (secret_id, region, endpoint_url) and AWS's message"
#: An HTTP 200 that botocore parsed, but not from Secrets Manager: botocore reads a body that is not JSON (a captive
#: portal's page, a catch-all server) as {"message": <body>} and an empty one as {}, so it raises nothing and the
#: answer merely lacks what Secrets Manager always sends. Taken as it is, such a DescribeSecret reads "exists, no
#: value" (a due revocation then finds no store holding the token the secret still holds) and a write "done".
_ERR_NOT_AWS = "{where}: the answer of {endpoint} to {operation} is not Secrets Manager's ({why})"
_HINT_NOT_AWS = (
    "check endpoint_url (it must reach Secrets Manager's API itself; without it, the region's endpoint is used), "
    "the proxy this host sends through (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) and the network: a captive portal, a "
    "proxy or another server answered in Secrets Manager's place"
)
#: How Secrets Manager says a secret is scheduled for deletion (InvalidRequestException, the code alone does
#: not tell): AWS "...because it was marked for deletion." (its apostrophe straight or typographic), and for
#: CreateSecret "...already scheduled for deletion."; moto "...currently marked deleted.".
_MARKED_DELETED = re.compile(r"\bmarked\s+(?:for\s+)?delet(?:ed|ion)\b|\bscheduled\s+for\s+deletion\b",
                             re.IGNORECASE)
#: How Secrets Manager refuses a write to a replica (InvalidParameterException; InvalidRequestException taken too),
#: AWS and moto alike: "Operation not permitted on a replica secret. Call must be made in primary secret's region."
_REPLICA_REFUSED = re.compile(r"\breplica\s+secret\b", re.IGNORECASE)
#: The IAM action an AccessDenied names: "User: <arn> is not authorized to perform: secretsmanager:TagResource on
#: resource: ..." (service prefix and action name only, so no punctuation after it is taken along). It and
#: _KMS_DENIED, Secrets Manager's words when KMS refused it the secret's key, are compiled on first use: only
#: a refusal asks.
_DENIED_ACTION = r"(?i)not authorized to perform:\s*([a-z0-9-]{1,64}:[a-z0-9*]{1,128})"
_KMS_DENIED = r"(?i)\bAccess to KMS is not allowed\b"
#: botocore's words for a parameter its service model lacks: the SDK is older than the API (the name
#: is the caller's keyword, never a value, so it may be shown).
_UNKNOWN_PARAMETER = re.compile(r'Unknown parameter in input: "(\w{1,64})"')
HINT_OLD_SDK = (
    "this boto3/botocore predates the parameter {parameter}: in the AWS Lambda function, build the zip with "
    "`python deploy/aws/build_zip.py --with-boto3` (the runtime's boto3 is older; PutSecretValue's RotationToken "
    "came in June 2024); elsewhere, upgrade boto3"
)


#: The ranges __post_init__ holds ``max_attempts`` and ``timeout_s`` to. Each field's metadata
#: "json_schema_extra" states the same constant in the policy file's JSON schema, so an editor that
#: reads the schema refuses what the loader would (a bound in pydantic's own ``ge``/``le`` would
#: move the check before __post_init__ and change its message and where it is reported).
_MAX_ATTEMPTS = (1, 20)
_LONGEST_TIMEOUT_S = 300


# A dataclass, not a pydantic model: the AWS Lambda function's cold start imports this module and
# must not import pydantic. The policy loader validates it through pydantic all the same
# (rotator/config/adapter_settings.py): field types first, then the checks in __post_init__. The class
# docstring and each field's metadata "description" are the descriptions in the policy file's JSON schema.
@dataclass(frozen=True, eq=False, repr=False)
class AwsSecretsManagerSettings(SettingsValue):
    """``[[policy.store]] type = "aws-secretsmanager"`` settings."""

    __pydantic_config__: ClassVar[dict[str, Any]] = SETTINGS_CONFIG

    #: A plain string: the policy loader's inline-secret check leaves `secret_id` alone here.
    secret_id: str = field(metadata={"description": "the secret's name or ARN (a name is created if absent)"})
    region: str | None = field(
        default=None, metadata={"description": "AWS region; default: the one in secret_id's ARN"}
    )
    endpoint_url: str | None = field(
        default=None, metadata={"description": "Secrets Manager endpoint, e.g. a VPC endpoint"}
    )
    sts_endpoint_url: str | None = field(
        default=None, metadata={"description": "STS endpoint for role_arn (default: AWS's)"}
    )
    profile: str | None = field(default=None, metadata={"description": "named profile in ~/.aws/config"})
    role_arn: str | None = field(default=None, metadata={"description": "IAM role to assume for every call"})
    external_id: str | None = field(default=None, metadata={"description": "for role_arn"})
    kms_key_id: str | None = field(default=None, metadata={"description": "KMS key for a secret rotator creates"})
    retry_mode: Literal["standard", "adaptive"] = field(
        default="standard", metadata={"description": "botocore retry mode"}
    )
    max_attempts: int | None = field(default=None, metadata={
        "description": "tries per call, the first included",
        "json_schema_extra": {"minimum": _MAX_ATTEMPTS[0], "maximum": _MAX_ATTEMPTS[1]},
    })
    timeout_s: float = field(default=10.0, metadata={
        "description": "connect and read timeout of each call",
        "json_schema_extra": {"exclusiveMinimum": 0, "maximum": _LONGEST_TIMEOUT_S},
    })

    def __post_init__(self) -> None:
        if not secret_id_is_valid(self.secret_id):
            raise ValueError(
                "`secret_id` must be a secret name (letters, digits and /_+=.@-, at most 512) or a Secrets Manager ARN"
            )
        if self.region is not None and not _REGION.match(self.region):
            raise ValueError("`region` must be an AWS region name such as eu-west-1")
        for key in ("endpoint_url", "sts_endpoint_url"):
            url = getattr(self, key)
            if url is not None:
                object.__setattr__(self, key, _http_url(key, url))
        if self.profile is not None and not self.profile:
            raise ValueError("`profile` must name a profile (it is empty)")
        if self.role_arn is not None and not re.match(_ROLE_ARN, self.role_arn):
            raise ValueError("`role_arn` must be an IAM role ARN: arn:aws:iam::<account>:role/<name>")
        if self.external_id is not None and not 2 <= len(self.external_id) <= 1224:
            raise ValueError("`external_id` must be 2 to 1224 characters long")
        if self.kms_key_id is not None and not self.kms_key_id:
            raise ValueError("`kms_key_id` must name a KMS key (it is empty)")
        if self.retry_mode not in ("standard", "adaptive"):
            raise ValueError("`retry_mode` must be 'standard' or 'adaptive'")
        low, high = _MAX_ATTEMPTS
        if self.max_attempts is not None and not low <= self.max_attempts <= high:
            raise ValueError(f"`max_attempts` must be between {low} and {high}")
        if not 0 < self.timeout_s <= _LONGEST_TIMEOUT_S:  # False for NaN too
            raise ValueError(f"`timeout_s` must be more than 0 and at most {_LONGEST_TIMEOUT_S} (seconds)")
        self._consistent()

    def _consistent(self) -> None:
        arn = _ARN.match(self.secret_id)
        if arn is None and self.region is None:
            raise ValueError("set `region`, or give `secret_id` as the secret's ARN")
        if arn is not None and self.region is not None and self.region != arn["region"]:
            raise ValueError(f"region {self.region!r} differs from the region in secret_id's ARN ({arn['region']!r})")
        if self.external_id is not None and self.role_arn is None:
            raise ValueError("`external_id` needs `role_arn`")
        if self.sts_endpoint_url is not None and self.role_arn is None:
            raise ValueError("`sts_endpoint_url` needs `role_arn`")

    def transport_warnings(self) -> list[str]:
        """Plain http:// endpoints to another host expose the token (see rotator/adapters/transport.py)."""
        from rotator.adapters.transport import plain_http_warning

        return [
            *plain_http_warning(self.endpoint_url, "endpoint_url"),
            *plain_http_warning(self.sts_endpoint_url, "sts_endpoint_url"),
        ]

    def secret_locations(self, base_dir: Path) -> list[str]:  # noqa: ARG002 - the hook's signature
        """The secret this store writes, for rotator/config/policy.py, which refuses two stores that write
        one (the second policy's runs would fail, or overwrite the first's token with ``adopt``).

        Only like is compared with like, so that no two different secrets are taken for one: an ARN names
        its secret in its own account and region; a name, in the region and the account of the
        credentials, which ``role_arn`` tells (the name is then written as the partial ARN it is) and a
        profile or the environment do not (the name then counts with the profile). A complete ARN (with
        AWS's 6-character suffix) and the name or partial ARN of the same secret are not matched: a name
        may end with what looks like such a suffix. ``endpoint_url`` is part of it (an emulator's secret
        is not AWS's)."""
        endpoint = f" at {self.endpoint_url}" if self.endpoint_url is not None else ""
        if _ARN.match(self.secret_id) is not None:
            return [f"AWS secret {self.secret_id}{endpoint}"]
        if self.role_arn is not None:
            _, partition, _, _, account, _ = self.role_arn.split(":", 5)
            return [f"AWS secret arn:{partition}:secretsmanager:{self.region_name}:{account}:secret:{self.secret_id}"
                    f"{endpoint}"]
        credentials = f"profile {self.profile}" if self.profile is not None else "the default credentials"
        return [f"AWS secret {self.secret_id} in {self.region_name} with {credentials}{endpoint}"]

    @property
    def region_name(self) -> str:
        arn = _ARN.match(self.secret_id)
        region = self.region or (arn["region"] if arn else None)
        assert region is not None  # __post_init__ guarantees it
        return region

    @property
    def is_arn(self) -> bool:
        return _ARN.match(self.secret_id) is not None

    def matches(self, arn: str, name: str) -> bool:
        """Does ``secret_id`` name the secret whose full ARN and name are given?"""
        return _names_secret(self.secret_id, arn, name)


_ARN_SUFFIX = r"-[A-Za-z0-9]{6}$"  # compiled on first use: only a publish to a missing secret asks


def _names_secret(secret_id: str, arn: str, name: str) -> bool:
    """Does ``secret_id`` (a name, a full or a partial ARN) name the secret whose full ARN and name are given?"""
    if secret_id in (arn, name):
        return True
    # A partial ARN (without the 6-character suffix AWS appends) also names it.
    return _ARN.match(secret_id) is not None and arn.startswith(secret_id + "-") and len(arn) == len(secret_id) + 7


def _name_to_create(settings: AwsSecretsManagerSettings) -> str | None:
    """The Name a CreateSecret for ``secret_id`` takes: the name itself, or the name in an ARN
    given without its suffix (a partial ARN, which names the created secret). ``None`` for an ARN
    whose name ends in a hyphen and 6 letters or digits: that may be the suffix AWS drew when it
    created the secret (a full ARN: never drawn again, so no secret created now is named by it) or
    the end of the name itself (a partial ARN), and only the user knows which."""
    arn = _ARN.match(settings.secret_id)
    if arn is None:
        return settings.secret_id
    if re.search(_ARN_SUFFIX, arn["name"]):
        return None
    return str(arn["name"])


def _own_version_id() -> str:
    return f"{OWN_VERSION_PREFIX}{uuid.uuid4()}"


def _same(there: TokenRecord | None, record: TokenRecord) -> bool:
    """Whether ``there`` holds ``record``'s token: its id and value (the same bootstrap run again
    stamps the record with another time)."""
    return there is not None and there.token_id == record.token_id and there.value == record.value


def _http_url(key: str, value: str) -> str:
    """``value`` without its trailing slashes; ValueError naming ``key`` unless it is a plain http(s) address."""
    if not value.isprintable() or " " in value:  # urlsplit drops a newline: the SDK would refuse it later
        raise ValueError(f"`{key}` must not contain spaces or control characters (a line break copied with it?)")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"`{key}` must be an http:// or https:// address")
    if parts.username or parts.password:
        raise ValueError(f"`{key}` must not carry credentials")
    from rotator.adapters.transport import http_address_problem  # only with an endpoint set: not the Lambda's cold path

    problem = http_address_problem(value)
    if problem:
        raise ValueError(f"`{key}` {problem}")
    return value.rstrip("/")


class SecretsManagerAPI(Protocol):
    """The boto3 ``secretsmanager`` calls rotator makes (keyword arguments as in boto3)."""

    def describe_secret(self, **kwargs: Any) -> Mapping[str, Any]: ...

    def get_secret_value(self, **kwargs: Any) -> Mapping[str, Any]: ...

    def put_secret_value(self, **kwargs: Any) -> Mapping[str, Any]: ...

    def create_secret(self, **kwargs: Any) -> Mapping[str, Any]: ...

    def update_secret_version_stage(self, **kwargs: Any) -> Mapping[str, Any]: ...

    def tag_resource(self, **kwargs: Any) -> Mapping[str, Any]: ...

    def untag_resource(self, **kwargs: Any) -> Mapping[str, Any]: ...

    def list_secret_version_ids(self, **kwargs: Any) -> Mapping[str, Any]: ...


#: botocore loggers that print request and response bodies at DEBUG: SecretString included.
_WIRE_LOGGERS = ("botocore.endpoint", "botocore.parsers")


def quiet_sdk_wire_logs() -> None:
    """Keep botocore's body dumps out of every log, even at ``--log-level debug``.

    botocore logs each request's parameters and each response body at DEBUG, which for Secrets
    Manager means the token. Loggers someone configured explicitly are left alone.
    """
    for name in _WIRE_LOGGERS:
        wire = logging.getLogger(name)
        if wire.level == logging.NOTSET:
            wire.setLevel(logging.INFO)


#: Builds the client from the settings and the policy name; the seam where tests inject one.
ClientFactory = Callable[[AwsSecretsManagerSettings, str], SecretsManagerAPI]


def boto3_client(settings: AwsSecretsManagerSettings, policy: str) -> SecretsManagerAPI:
    """The real client: explicit region and endpoint, botocore retries, optional assumed role.

    boto3 is imported here, not at module level, so `rotator validate` stays fast.
    """
    import boto3.session
    from botocore.config import Config

    where = f"aws-secretsmanager:{settings.secret_id}"
    retries: dict[str, Any] = {"mode": settings.retry_mode}
    if settings.max_attempts is not None:
        retries["total_max_attempts"] = settings.max_attempts
    options: dict[str, Any] = {
        "retries": retries,
        "connect_timeout": settings.timeout_s,
        "read_timeout": settings.timeout_s,
        # Only endpoint_url counts: no AWS_ENDPOINT_URL* variable or profile endpoint.
        "ignore_configured_endpoint_urls": True,
        "user_agent_extra": "rotator",
    }
    config = Config(**options)
    with map_errors(where, "create a client", profile=settings.profile):
        if settings.role_arn is None:
            session = boto3.session.Session(profile_name=settings.profile, region_name=settings.region_name)
        else:
            session = _assumed_role_session(_sts_client(settings, config), settings, _session_name(policy))
        client: SecretsManagerAPI = session.client("secretsmanager", endpoint_url=settings.endpoint_url, config=config)
    return client


def _session_name(policy: str) -> str:
    return re.sub(r"[^\w+=,.@-]", "-", f"rotator-{policy}")[:64]


def _sts_client(settings: AwsSecretsManagerSettings, config: Any) -> Any:
    """The STS client that assumes ``role_arn``: the standard chain's (or ``profile``'s) credentials, and
    ``sts_endpoint_url`` or else the region's own STS endpoint, whatever the botocore version."""
    import boto3.session
    import botocore.session

    core = botocore.session.Session(profile=settings.profile)
    # botocore before 1.40 defaults to the global endpoint (sts.amazonaws.com, us-east-1): a host that
    # reaches only its region's STS (a VPC interface endpoint) could not assume the role, and the newest
    # botocore does the opposite. Set on the session itself, this also outranks AWS_STS_REGIONAL_ENDPOINTS
    # and a profile's sts_regional_endpoints: as for every endpoint here, only the settings decide.
    core.set_config_variable("sts_regional_endpoints", "regional")
    base = boto3.session.Session(botocore_session=core, region_name=settings.region_name)
    return base.client("sts", endpoint_url=settings.sts_endpoint_url, config=config)


def _assumed_role_session(sts: Any, settings: AwsSecretsManagerSettings, session_name: str) -> Any:
    """A session whose credentials come from sts:AssumeRole, refreshed before they expire.

    Neither boto3 nor botocore documents a way to build such a session in code: their documented
    assume-role is a profile in ~/.aws/config (role_arn with source_profile or credential_source),
    which cannot name "the standard chain" as its source, nor a given STS endpoint, without writing a
    config file. So this uses botocore's credential classes (CredentialProvider, CredentialResolver,
    DeferredRefreshableCredentials, the "credential_provider" component), which its own providers use,
    unchanged from botocore 1.34 (the lowest allowed) to today. tests/adapters/test_aws_secretsmanager.py
    checks the assumed credentials and their refresh; .ci/deps-lowest runs it on the lowest botocore,
    the main CI on the newest (docs/adapters.md).
    """
    import boto3.session
    import botocore.session
    from botocore.credentials import CredentialProvider, CredentialResolver, DeferredRefreshableCredentials

    request: dict[str, str] = {"RoleArn": str(settings.role_arn), "RoleSessionName": session_name}
    if settings.external_id is not None:
        request["ExternalId"] = settings.external_id

    def refresh() -> dict[str, str]:
        answer = sts.assume_role(**request)["Credentials"]
        logger.debug("assumed role %s (session %s) until %s", settings.role_arn, session_name, answer["Expiration"])
        return {
            "access_key": answer["AccessKeyId"],
            "secret_key": answer["SecretAccessKey"],
            "token": answer["SessionToken"],
            "expiry_time": answer["Expiration"].isoformat(),
        }

    class AssumedRole(CredentialProvider):  # type: ignore[misc]
        METHOD = "assume-role"
        CANONICAL_NAME = "custom-rotator-assume-role"  # botocore: names of providers outside it start "custom"

        def load(self) -> Any:
            return DeferredRefreshableCredentials(refresh_using=refresh, method=self.METHOD)

    core = botocore.session.Session()
    # This provider is the chain's only link: the environment's credentials never sign a call.
    core.register_component("credential_provider", CredentialResolver(providers=[AssumedRole()]))
    return boto3.session.Session(botocore_session=core, region_name=settings.region_name)


# -- reading a secret -----------------------------------------------------------------------------


def secret_id_is_valid(value: str) -> bool:
    """Whether ``value`` is a secret name or a Secrets Manager ARN."""
    return bool(_ARN.match(value) or _NAME.match(value))


class SecretView:
    """What DescribeSecret says: identity, tags, rotation, and the labelled versions.

    A plain class: it holds dicts (neither hashable nor compared), and a dataclass would cost
    the Lambda function's every cold start ~0.5 ms to create.
    """

    __slots__ = ("arn", "name", "primary_region", "rotation_enabled", "stages", "tags")

    def __init__(self, *, arn: str, name: str, rotation_enabled: bool, tags: Mapping[str, str],
                 stages: Mapping[str, tuple[str, ...]], primary_region: str | None = None) -> None:  # fmt: skip
        self.arn, self.name, self.rotation_enabled = arn, name, rotation_enabled
        self.tags = tags
        #: VersionId -> its staging labels; versions without a label are left out (as AWS does).
        self.stages = stages
        #: DescribeSecret's PrimaryRegion as sent (not checked: outside input), None when absent. A replica's
        #: answer names its primary's region; a primary's may name its own.
        self.primary_region = primary_region

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any]) -> SecretView:
        tags = {str(t.get("Key")): str(t.get("Value", "")) for t in answer.get("Tags") or ()}
        stages = {str(v): tuple(s) for v, s in (answer.get("VersionIdsToStages") or {}).items() if s}
        primary = answer.get("PrimaryRegion")
        return cls(
            arn=str(answer.get("ARN", "")),
            name=str(answer.get("Name", "")),
            rotation_enabled=bool(answer.get("RotationEnabled")),
            tags=tags,
            stages=stages,
            primary_region=primary if isinstance(primary, str) and primary else None,
        )

    def version_with(self, stage: str) -> str | None:
        return next((version for version, labels in self.stages.items() if stage in labels), None)

    def is_replica_in(self, region: str) -> bool:
        """Whether this is a replica, read in ``region``: a PrimaryRegion other than ``region``."""
        return self.primary_region is not None and self.primary_region != region

    @property
    def managed(self) -> bool:
        return self.tags.get(MANAGED_BY_KEY) == MANAGED_BY

    @property
    def marker_policy(self) -> str | None:
        """The policy rotator's tag names on a managed secret (Engine._check_ownership's evidence
        when AWSCURRENT holds no record)."""
        value = self.tags.get(POLICY_KEY) if self.managed else None
        return value if isinstance(value, str) and value else None


def describe(api: SecretsManagerAPI, secret_id: str, where: str) -> SecretView | None:
    """DescribeSecret; ``None`` if the secret does not exist."""
    answer = describe_answer(api, secret_id, where)
    return None if answer is None else SecretView.from_answer(answer)


def describe_answer(api: SecretsManagerAPI, secret_id: str, where: str) -> Mapping[str, Any] | None:
    """DescribeSecret's whole answer (the Lambda reads its rotation schedule too); ``None`` if the
    secret does not exist."""
    with map_errors(where, "DescribeSecret", secret_id=secret_id, region=_region_of(api)):
        try:
            answer: Mapping[str, Any] = api.describe_secret(SecretId=secret_id)
        except botocore.exceptions.ClientError as exc:
            if client_error_code(exc) == "ResourceNotFoundException":
                return None
            raise
    # Every read and write starts here: what it says of labels and tags is taken as the secret's only once
    # the answer names the secret asked for.
    check_answer(api, where, "DescribeSecret", answer, secret_id)
    return answer


def read_stage(
    api: SecretsManagerAPI, secret_id: str, stage: str | None, where: str, version_id: str | None = None
) -> tuple[str, Mapping[str, Any] | None] | None:
    """GetSecretValue of ``stage`` (and ``version_id``, if given; ``stage`` None: that version
    whatever its labels, e.g. a deprecated one).

    ``None`` when that version holds no value (Secrets Manager creates a rotation's AWSPENDING
    version before its function puts a value). Otherwise ``(VersionId, payload)``, the payload
    being ``None`` when the value is not a JSON object (binary, plain text).
    """
    request: dict[str, str] = {"SecretId": secret_id}
    if stage is not None:
        request["VersionStage"] = stage
    if version_id is not None:
        request["VersionId"] = version_id
    answer = _get_value(api, request, where)
    if answer is None:
        return None
    return str(answer["VersionId"]), _payload(answer)


def read_labelled_version(
    api: SecretsManagerAPI, secret_id: str, version_id: str, where: str
) -> tuple[tuple[str, ...], Mapping[str, Any] | None] | None:
    """GetSecretValue of ``version_id``: its staging labels, read now, and its payload (as
    :func:`read_stage` gives it); ``None`` when the version holds no value."""
    answer = _get_value(api, {"SecretId": secret_id, "VersionId": version_id}, where)
    if answer is None:
        return None
    return tuple(str(label) for label in answer.get("VersionStages") or ()), _payload(answer)


def _get_value(api: SecretsManagerAPI, request: Mapping[str, str], where: str) -> Mapping[str, Any] | None:
    """GetSecretValue; None when the version holds no value. The answer names the version asked for (a
    VersionId always; VersionStages, when given, carry the stage asked for)."""
    with map_errors(where, "GetSecretValue", secret_id=request["SecretId"], region=_region_of(api)):
        try:
            answer: Mapping[str, Any] = api.get_secret_value(**request)
        except botocore.exceptions.ClientError as exc:
            if client_error_code(exc) == "ResourceNotFoundException":
                return None
            raise
    check_answer(api, where, "GetSecretValue", answer, request["SecretId"], version=True,
                 version_id=request.get("VersionId"))
    version = answer["VersionId"]
    stage = request.get("VersionStage")
    labels = answer.get("VersionStages")
    if stage is not None and labels is not None and (not isinstance(labels, list) or stage not in labels):
        raise _not_aws(api, where, "GetSecretValue", f"its version {_shown(version)} does not carry {stage}, the "
                       "staging label asked for")
    return answer


def check_answer(
    api: object, where: str, operation: str, answer: Mapping[str, Any], secret_id: str, *, version: bool = False,
    version_id: str | None = None,
) -> None:
    """PermanentError unless ``answer`` (to ``operation`` on ``secret_id``) is Secrets Manager's.

    botocore raises nothing for an HTTP 200 whose body is not Secrets Manager's JSON: it reads a body that
    is not JSON as {"message": <body>} and an empty one as {}. What Secrets Manager always sends (AWS and
    moto alike) tells: the secret's ARN and Name, naming the secret asked for, and a VersionId
    (``version``), which is ``version_id`` when given: the version asked for, or the ClientRequestToken a
    write sent (Secrets Manager makes it the new version's id, so any other id is not this write's answer)."""
    arn, name = answer.get("ARN"), answer.get("Name")
    if not isinstance(arn, str) or not isinstance(name, str) or not arn or not name:
        raise _not_aws(api, where, operation, f"{_status(answer)}without the ARN and Name of the secret, which "
                       "Secrets Manager sends")
    matched = _ARN.match(arn)
    # AWS appends "-" and 6 characters to the name to make the ARN's resource part
    whole = matched["name"] if matched is not None else ""
    if matched is None or not _NAME.match(name) or whole[:-7] != name or not re.search(_ARN_SUFFIX, whole):
        raise _not_aws(api, where, operation, "its ARN and Name are not a Secrets Manager secret's")
    if not _names_secret(secret_id, arn, name):
        raise _not_aws(api, where, operation, f"it names secret {_shown(arn)}, not {_shown(secret_id)}")
    if version:
        value = answer.get("VersionId")
        if not isinstance(value, str) or not value:
            raise _not_aws(api, where, operation, f"{_status(answer)}without the VersionId Secrets Manager sends")
        if version_id is not None and value != version_id:
            asked = "the version asked for" if operation == "GetSecretValue" else "the ClientRequestToken sent"
            raise _not_aws(api, where, operation, f"it is version {_shown(value)}, not {_shown(version_id)}, {asked}")


def check_request_id(api: object, where: str, operation: str, answer: Mapping[str, Any]) -> None:
    """PermanentError unless ``answer`` carries the request id Secrets Manager gives every answer (its
    x-amzn-RequestId header), for calls whose answer has no body to tell (TagResource, UntagResource). An
    answer without botocore's ResponseMetadata made no HTTP exchange (a test double) and has nothing to show."""
    metadata = answer.get("ResponseMetadata")
    if isinstance(metadata, Mapping) and not metadata.get("RequestId"):
        raise _not_aws(api, where, operation, f"{_status(answer)}without the request id Secrets Manager sends")


def check_version_list(api: object, where: str, answer: Mapping[str, Any]) -> None:
    """PermanentError unless ListSecretVersionIds' ``answer`` holds the Versions list Secrets Manager always
    sends (empty or not): a portal's {} read as "no versions" would leave no run id to prove a claim by.
    Its ARN is not checked: moto answers the secret's name there."""
    if not isinstance(answer.get("Versions"), list):
        raise _not_aws(api, where, "ListSecretVersionIds", f"{_status(answer)}without the Versions list Secrets "
                       "Manager sends")


def _not_aws(api: object, where: str, operation: str, why: str) -> PermanentError:
    endpoint = getattr(getattr(api, "meta", None), "endpoint_url", None)
    shown = endpoint if isinstance(endpoint, str) and endpoint else "Secrets Manager's endpoint"
    return PermanentError(_ERR_NOT_AWS.format(where=where, endpoint=shown, operation=operation, why=why),
                          hint=_HINT_NOT_AWS)


def _status(answer: Mapping[str, Any]) -> str:
    """The answer's status and a space ("HTTP 200 ") when botocore recorded it, else nothing."""
    metadata = answer.get("ResponseMetadata")
    status = metadata.get("HTTPStatusCode") if isinstance(metadata, Mapping) else None
    return f"HTTP {status} " if isinstance(status, int) else ""


def _shown(value: object) -> str:
    """A value of an answer as a message may show it: redacted, cut, quoted (it may be anyone's text)."""
    text = REDACTOR.redact(" ".join(str(value).split()))
    return repr(text if len(text) <= 200 else text[:200] + "...")


def _region_of(api: object) -> str | None:
    """The region a botocore client sends to (for the commands a hint prints); None when it does not say."""
    region = getattr(getattr(api, "meta", None), "region_name", None)
    return region if isinstance(region, str) and region else None


def _payload(answer: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The JSON object GetSecretValue's SecretString holds; None for anything else (binary, plain text)."""
    text = answer.get("SecretString")
    if not isinstance(text, str):
        return None
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested thousands deep: not a rotator payload
        return None
    return parsed if isinstance(parsed, Mapping) else None


class PendingRotationError(WriteBlocked):
    """AWSPENDING sits on a version other than AWSCURRENT's: a rotation is unfinished. From
    ``read_current``, ``state`` is AWSCURRENT (valid throughout a rotation) for readers."""

    def __init__(self, where: str, secret: str, region: str, pending: str, current: str | None) -> None:
        # The pending version's id is whatever ClientRequestToken the caller of PutSecretValue chose (AWS
        # sets no pattern, only 32-64 characters): shown whole and quoted for the shell, like every value
        # in the command, which must work as printed and run nothing else (as the Lambda runner's hint).
        shown = len(pending) <= 64 and pending.isprintable()
        super().__init__(
            _ERR_PENDING.format(where=where, pending=repr(pending) if shown else reprlib.repr(pending),
                                current=repr(current) if current is not None else "no version"),
            hint=_HINT_PENDING.format(secret=shlex.quote(secret), region=shlex.quote(region),
                                      pending=shlex.quote(pending) if shown else _VERSION_PLACEHOLDER),
        )
        self.pending = pending
        self.current = current


class ReplicaSecretError(ConfigError, WriteBlocked):
    """The store reaches a replica of the secret (its ``region`` is not the primary's): Secrets Manager
    refuses every write there, so each rotation would mint a token only to revoke it. A ConfigError to a
    writer, raised before it mints; a reader (``rotator sync``'s source, a management token read from the
    replica's region) may use ``state``, the replica's current value, as for any WriteBlocked."""

    def __init__(self, where: str, settings: AwsSecretsManagerSettings, primary: str | None, arn: str | None) -> None:
        region = settings.region_name
        # PrimaryRegion is DescribeSecret's text: quoted, and put in a setting, only as a region name.
        known = primary if primary is not None and len(primary) <= 64 and _REGION.match(primary) else None
        parts = arn.split(":") if arn is not None and _ARN.match(arn) is not None else None
        primary_arn = ":".join([*parts[:3], known, *parts[4:]]) if parts is not None and known is not None else None
        super().__init__(
            f"{where}: the secret in {region} is a replica of the primary in {known or 'another region'}; rotator "
            "writes the primary (Secrets Manager refuses writes to a replica)",
            hint=_replica_hint(settings, known, primary_arn),
        )
        self.primary_region = known


def _replica_hint(settings: AwsSecretsManagerSettings, primary: str | None, primary_arn: str | None) -> str:
    if primary is None or (settings.is_arn and primary_arn is None):
        return ("point the store at the primary secret: set `region` to its region (PrimaryRegion in `aws "
                f"secretsmanager describe-secret {_secret_args(settings.secret_id, settings.region_name)}`), or give "
                "secret_id as the primary's ARN")
    if settings.is_arn:
        region = f" and region = {json.dumps(primary)}" if settings.region is not None else ""
        return f"set secret_id = {json.dumps(primary_arn)}{region} in the store (the primary's ARN)"
    arn = f", {primary_arn}" if primary_arn is not None else ""
    return f"set region = {json.dumps(primary)} in the store (or give secret_id as the primary's ARN{arn})"


# -- the store --------------------------------------------------------------------------------------


class AwsSecretsManagerStore:
    """The current token as the AWSCURRENT version of one secret. One caller at a time."""

    kind: ClassVar[str] = "aws-secretsmanager"
    settings_model: ClassVar[type[Any]] = AwsSecretsManagerSettings

    def __init__(self, settings: AwsSecretsManagerSettings, ctx: AdapterContext, client_factory: ClientFactory) -> None:
        quiet_sdk_wire_logs()
        self._settings = settings
        self._policy = ctx.policy
        self._factory = client_factory
        self._api: SecretsManagerAPI | None = None
        self._sent = 0
        #: The policy the secret's tags named at the last read_current (None: absent, or no such tag): the
        #: marker the engine's ownership check saw, which a publish into a secret with no value may write over.
        self._marker_read: str | None = None
        sid = settings.secret_id
        self._location = f"aws-secretsmanager:{sid if settings.is_arn else f'{settings.region_name}/{sid}'}"

    @classmethod
    def from_config(
        cls, settings: Any, ctx: AdapterContext, client_factory: ClientFactory | None = None
    ) -> AwsSecretsManagerStore:
        """Nothing is contacted here; the client is built on first use."""
        return cls(checked_settings(cls, settings, AwsSecretsManagerSettings), ctx, client_factory or boto3_client)

    @property
    def location(self) -> str:
        return self._location

    @property
    def settings(self) -> AwsSecretsManagerSettings:
        return self._settings

    @property
    def request_count(self) -> int:
        """HTTP requests to Secrets Manager this store's own client sent (botocore's retries
        included; STS calls for ``role_arn`` not); 0 with a client given as ``client_factory``."""
        return self._sent

    def read_current(self) -> StoreState:
        """The AWSCURRENT version. PermanentError if a managed payload is malformed, or if
        AWSPENDING sits on another version that is not rotator's own interrupted publish;
        ReplicaSecretError if the secret is a replica (the store's region is not the primary's)."""
        self._marker_read = None  # a read that fails saw nothing
        view = self._describe()
        self._marker_read = view.marker_policy if view is not None else None
        if view is None:
            logger.debug("%s: absent", self._location)
            return StoreState(version=None, managed=False, record=None)
        if view.is_replica_in(self._settings.region_name):  # a writer stops here, before it mints
            replica = self._replica(view)
            replica.state = self._state_for_readers(view)
            raise replica
        current = view.version_with(CURRENT)
        if current is None:
            logger.debug("%s: exists with no AWSCURRENT value", self._location)
            return StoreState(version=None, managed=view.managed, record=None, marker_policy=view.marker_policy)
        try:
            self._check_pending(view, current, *self._read_pending(view, current))
        except PendingRotationError as exc:  # a writer stops here, before it mints; a reader may go on
            exc.state = self._state_for_readers(view)
            raise
        return self._current_state(view)

    def _state_for_readers(self, view: SecretView) -> StoreState | None:
        """What a WriteBlocked raised by read_current carries for readers: the current value, or None when
        it is malformed (the refusal stands: it is what a writer must see; a transient error passes)."""
        if view.version_with(CURRENT) is None:
            return StoreState(version=None, managed=view.managed, record=None, marker_policy=view.marker_policy)
        try:
            return self._current_state(view)
        except MalformedPayload:
            return None

    def _current_state(self, view: SecretView) -> StoreState:
        answer = self._read(CURRENT)
        if answer is None:  # AWSCURRENT moved between the two calls: the next read sees it
            raise TransientError(f"{self._location}: AWSCURRENT changed while reading it", hint=_HINT_RETRY)
        version, payload = answer
        try:
            record = self._parse(payload, version, strict=view.managed)
        except MalformedPayload as exc:
            exc.state = StoreState(version=version, managed=view.managed, record=None,
                                   marker_policy=view.marker_policy)
            raise
        logger.debug(
            "%s: AWSCURRENT on version %s, managed=%s, token_id=%s",
            self._location, version, view.managed, record.token_id if record else None,
        )  # fmt: skip
        return StoreState(version=version, managed=view.managed, record=record)

    def publish(self, record: TokenRecord, expected_version: str | None) -> str:
        """Put ``record`` as AWSPENDING, move AWSCURRENT to it from ``expected_version``, drop
        AWSPENDING. Publishing the record AWSCURRENT already holds completes instead of conflicting."""
        view = self._describe()
        if view is not None and view.is_replica_in(self._settings.region_name):
            raise self._replica(view)  # made a replica since read_current (ForceOverwriteReplicaSecret): no write lands
        if view is None:
            if expected_version is not None:
                return self._settle(record, expected_version, None)
            return self._create(record)
        current = view.version_with(CURRENT)
        if current != expected_version:
            return self._settle(record, expected_version, current, view)
        if current is None:
            self._check_marker_unchanged(view)
        return self._publish_into(record, view, current)

    # -- internals -------------------------------------------------------------------------------

    def _publish_into(self, record: TokenRecord, view: SecretView, current: str | None) -> str:
        """Steps 2-5 on the secret ``view`` describes, whose AWSCURRENT is on ``current`` (None: a secret
        with no value yet, whose first version takes AWSCURRENT)."""
        pending, leftover = self._read_pending(view, current)
        # Before the check of AWSPENDING: an earlier attempt of this very publish that lost its move left
        # it there (the engine's retry, the same command run again), and is finished, not refused.
        if pending is not None and _same(leftover, record):
            new = pending
            logger.info("%s: version %s already holds token %s as AWSPENDING", self._location, new, record.token_id)
        else:
            self._check_pending(view, current, pending, leftover)
            new = self._put_pending(record)
        try:
            if current is not None:
                self._move_current(new, current)
            else:
                self._first_current(new)
        except ConflictError:
            raise  # _move_current and _first_current dropped AWSPENDING before raising it
        except RotatorError:
            if view.rotation_enabled:
                # Until the label goes, Secrets Manager starts no rotation of the secret; without rotation
                # it stays, and the retry finishes with this version.
                self._drop_pending(new, "Secrets Manager starts no rotation of the secret until it is gone; "
                                        "publishing this token again finishes with that version")
            raise
        self._drop_pending(new)
        self._ensure_tags(view.tags)
        logger.info("published token %s to %s as version %s", record.token_id, self._location, new)
        return new

    def _create(self, record: TokenRecord) -> str:
        name = _name_to_create(self._settings)
        if name is None:
            # A full ARN ends in the 6 random characters AWS chose when it created that secret: a secret
            # made now would get other ones, and this secret_id would never name it. A partial ARN whose
            # name merely ends so looks the same (AWS itself may read its ending as a suffix): given as a
            # name, that secret is created and found.
            arn = _ARN.match(self._settings.secret_id)
            assert arn is not None
            whole, bare, ending = arn["name"], arn["name"][:-7], arn["name"][-7:]
            region = self._settings.region_name
            raise PermanentError(
                f"{self._location}: the secret does not exist, and a full ARN cannot be created: the name in "
                f"secret_id ends in {ending!r}, which is either the random suffix AWS gave the secret when it "
                f"created it (a new secret gets another) or part of the secret's name ({whole!r}, an ARN given "
                "without its suffix)",
                hint=f"if the secret's name is {whole!r}, set secret_id = {json.dumps(whole)} and region = "
                f"{json.dumps(region)} in the store, and rotator creates it; if {ending!r} was AWS's suffix, create "
                f"the secret: aws secretsmanager create-secret --region {shlex.quote(region)} --name "
                f"{shlex.quote(bare)}, then set secret_id to the ARN it prints (or to the name {bare!r}, and rotator "
                "creates it); then run the same command again",
            )
        request: dict[str, Any] = {
            "Name": name,
            "ClientRequestToken": _own_version_id(),
            "SecretString": json.dumps(record.payload()),
            "Description": f"InfluxDB token rotated by rotator (policy {self._policy})",
            "Tags": [{"Key": k, "Value": v} for k, v in self._wanted_tags().items()],
        }
        if self._settings.kms_key_id is not None:
            request["KmsKeyId"] = self._settings.kms_key_id

        def create(api: SecretsManagerAPI) -> Mapping[str, Any] | None:
            try:
                return api.create_secret(**request)
            except botocore.exceptions.ClientError as exc:
                if client_error_code(exc) == "ResourceExistsException":
                    return None  # created by someone else meanwhile
                raise

        answer = self._call("CreateSecret", create)
        if answer is None:
            return self._created_meanwhile(record, name)
        # Checked against the name created, not secret_id: a partial ARN of another account names another
        # secret than the one created, which the DescribeSecret below tells as such.
        self._check("CreateSecret", answer, name, version=True, version_id=request["ClientRequestToken"])
        version = str(answer["VersionId"])
        if self._describe() is None:  # e.g. a partial ARN of another account: the secret went elsewhere
            raise PermanentError(
                f"{self._location}: created secret {name!r}, but secret_id does not name it",
                hint="give secret_id as the secret's name or full ARN (aws secretsmanager describe-secret "
                f"--secret-id {shlex.quote(name)})",
            )
        logger.info("created %s with token %s as version %s", self._location, record.token_id, version)
        return version

    def _check_marker_unchanged(self, view: SecretView) -> None:
        """ConflictError, nothing written, when the secret (no value yet) is tagged for another policy now and
        was not at read_current: the engine's ownership check, made on that read, never saw the marker. One it
        did see passed that check (`adopt = true`), and is written over."""
        other = view.marker_policy
        if other is None or other in (self._policy, self._marker_read):
            return
        raise ConflictError(
            f"{self._location}: the secret was created or tagged by another writer after rotator read it, with no "
            f"value and tags marking it managed by rotator for policy {other!r}, not {self._policy!r}; nothing was "
            "written",
            hint=_HINT_OTHER_POLICY,
        )

    def _created_meanwhile(self, record: TokenRecord, name: str) -> str:
        """CreateSecret lost a race: someone created the secret after read_current found it absent. With a
        value (AWSCURRENT), that is a conflict unless it is this very record (a retry). Without one (Terraform,
        say, creating it empty), the publish goes on as into any secret with no value yet, which the engine
        writes without `adopt`, unless its tags name another policy: that is the engine's ownership check
        to make, on a fresh read (it alone knows `adopt`), so the publish stops here, having written nothing."""
        view = self._describe()
        if view is None:
            raise ConflictError(
                f"{self._location}: CreateSecret answered that a secret named {name!r} exists, and DescribeSecret "
                "of secret_id then found none (deleted meanwhile, or secret_id names it in another account)",
                hint=_HINT_CONFLICT.format(secret=shlex.quote(self._settings.secret_id),
                                           region=shlex.quote(self._settings.region_name)),
            )
        current = view.version_with(CURRENT)
        if current is not None:
            return self._settle(record, None, current, view)
        other = view.marker_policy
        if other is not None and other != self._policy:
            raise ConflictError(
                f"{self._location}: the secret was created by another writer after rotator found it absent, with no "
                f"value and tags marking it managed by rotator for policy {other!r}, not {self._policy!r}; nothing "
                "was written",
                hint=_HINT_OTHER_POLICY,
            )
        logger.info("%s: created by another writer meanwhile, with no value yet; publishing token %s into it",
                    self._location, record.token_id)
        return self._publish_into(record, view, None)

    def _put_pending(self, record: TokenRecord) -> str:
        token = _own_version_id()

        def put(api: SecretsManagerAPI) -> Mapping[str, Any] | None:
            try:
                return api.put_secret_value(SecretId=self._settings.secret_id, ClientRequestToken=token,
                                            SecretString=json.dumps(record.payload()), VersionStages=[PENDING])
            except botocore.exceptions.ClientError as exc:
                message = str(exc.response.get("Error", {}).get("Message", ""))
                if client_error_code(exc) in _CAS_CODES and _REPLICA_REFUSED.search(message):
                    return None  # a replica since publish's DescribeSecret
                raise

        answer = self._call("PutSecretValue", put)
        if answer is None:
            raise self._replica_refused()
        # No VersionId, or another than the token sent: the value went nowhere (not Secrets Manager's answer),
        # so there is no version to move to.
        self._check("PutSecretValue", answer, version=True, version_id=token)
        return token

    def _move_current(self, new: str, current: str) -> None:
        def move(api: SecretsManagerAPI) -> bool:
            try:
                answer = api.update_secret_version_stage(
                    SecretId=self._settings.secret_id, VersionStage=CURRENT, MoveToVersionId=new,
                    RemoveFromVersionId=current,
                )  # fmt: skip
            except botocore.exceptions.ClientError as exc:
                if client_error_code(exc) in _CAS_CODES:
                    return False  # AWSCURRENT is no longer on `current`
                raise
            self._check("UpdateSecretVersionStage", answer)
            return True

        if self._call("UpdateSecretVersionStage", move):
            return
        view = self._describe()
        actual = view.version_with(CURRENT) if view else None
        if actual == new:
            return  # an earlier attempt moved it
        if actual != current:
            self._drop_pending(new)  # leave no AWSPENDING behind: it would block every rotation
            raise self._conflict(current, actual)
        raise PermanentError(
            f"{self._location}: Secrets Manager refused to move AWSCURRENT from version {current} to {new}",
            hint=_HINT_AWS,
        )

    def _first_current(self, new: str) -> None:
        """An empty secret: PutSecretValue gave its first version AWSCURRENT by itself, unless
        someone else's first value came first (a conflict)."""
        view = self._describe()
        actual = view.version_with(CURRENT) if view else None
        if actual == new:
            return
        if actual is not None:
            self._drop_pending(new)
            raise self._conflict(None, actual)
        answer = self._call(
            "UpdateSecretVersionStage",
            lambda api: api.update_secret_version_stage(
                SecretId=self._settings.secret_id, VersionStage=CURRENT, MoveToVersionId=new
            ),
        )
        self._check("UpdateSecretVersionStage", answer)

    def _drop_pending(self, version: str, left: str = "harmless while it is AWSCURRENT's") -> None:
        """Remove AWSPENDING from ``version``; a failure only warns, saying what the label ``left`` there means."""
        try:
            answer = self._call(
                "UpdateSecretVersionStage",
                lambda api: api.update_secret_version_stage(
                    SecretId=self._settings.secret_id, VersionStage=PENDING, RemoveFromVersionId=version
                ),
            )
            self._check("UpdateSecretVersionStage", answer)
        except RotatorError as exc:
            logger.warning("%s: could not remove AWSPENDING from version %s (%s): %s", self._location, version,
                           left, exc)

    def _ensure_tags(self, tags: Mapping[str, str]) -> None:
        wanted = self._wanted_tags()
        missing = {k: v for k, v in wanted.items() if tags.get(k) != v}
        if not missing:
            return
        try:
            answer = self._call(
                "TagResource",
                lambda api: api.tag_resource(
                    SecretId=self._settings.secret_id, Tags=[{"Key": k, "Value": v} for k, v in missing.items()]
                ),
            )
            # TagResource answers with no body: only the request id tells Secrets Manager's answer.
            check_request_id(self._client(), self._location, "TagResource", answer)
        except RotatorError as exc:
            # The value is published: say so, and let the engine retry (publishing again completes).
            raise TransientError(
                f"{self._location}: the token is published but the secret is not tagged managed-by=rotator yet: {exc}",
                # The cause's own hint: a refusal names the IAM action, an answer not Secrets Manager's the endpoint.
                hint=f"{exc.hint or 'grant secretsmanager:TagResource on the secret'}; the next attempt completes "
                "the publish",
            ) from None

    def _wanted_tags(self) -> dict[str, str]:
        return {MANAGED_BY_KEY: MANAGED_BY, POLICY_KEY: self._policy}

    def _settle(
        self, record: TokenRecord, expected: str | None, actual: str | None, view: SecretView | None = None
    ) -> str:
        """AWSCURRENT is not where PLAN saw it: done already (the same record), or a conflict."""
        if actual is not None and self._holds(actual, CURRENT, record):
            logger.info(
                "%s: version %s already holds token %s; completing the publish", self._location, actual, record.token_id
            )
            if view is not None and view.version_with(PENDING) == actual:
                self._drop_pending(actual)
            self._ensure_tags(view.tags if view is not None else {})
            return actual
        raise self._conflict(expected, actual)

    def _conflict(self, expected: str | None, actual: str | None) -> ConflictError:
        return ConflictError(
            _ERR_CONFLICT.format(
                where=self._location, expected=expected or "no version (create only)", actual=actual or "no version"
            ),
            hint=_HINT_CONFLICT.format(secret=shlex.quote(self._settings.secret_id),
                                       region=shlex.quote(self._settings.region_name)),
        )

    def _holds(self, version: str, stage: str, record: TokenRecord) -> bool:
        answer = read_stage(self._client(), self._settings.secret_id, stage, self._location, version_id=version)
        if answer is None or answer[1] is None:
            return False
        return _same(self._parse(answer[1], version, strict=False), record)

    def _read_pending(self, view: SecretView, current: str | None) -> tuple[str | None, TokenRecord | None]:
        """The version AWSPENDING is on when that is not AWSCURRENT's (else None), and the record it
        holds (None: no value yet, or not a record)."""
        pending = view.version_with(PENDING)
        if pending is None or pending == current:
            return None, None
        answer = read_stage(self._client(), self._settings.secret_id, PENDING, self._location, version_id=pending)
        return pending, self._parse(answer[1], pending, strict=False) if answer and answer[1] is not None else None

    def _check_pending(
        self, view: SecretView, current: str | None, pending: str | None, leftover: TokenRecord | None
    ) -> None:
        """PendingRotationError unless AWSPENDING (on ``pending``, holding ``leftover``: _read_pending)
        is absent, on AWSCURRENT's version, or an interrupted publish of this store's."""
        if pending is None:
            return
        # A pending version holding this policy's payload is an interrupted publish of rotator's when the
        # store named it (a rotation function's version has Secrets Manager's id), or on a secret without
        # rotation whatever its id (one put before the store named its versions), also on a secret not
        # tagged yet (an adoption tags it only after its move). Its token is the one the engine's journal
        # records for that run: rolled back by recovery, or published by the same command run again. So
        # this reads as AWSCURRENT, what consumers use. Whether rotator may write an untagged secret at all
        # is the engine's ownership check (the policy's `adopt`), made on what this read returns.
        own = pending.startswith(OWN_VERSION_PREFIX) or not view.rotation_enabled
        if own and leftover is not None and leftover.policy == self._policy:
            logger.warning(
                "%s: AWSPENDING on version %s holds token %s from an interrupted publish by this policy; "
                "publishing that token again finishes with it, another publish replaces it",
                self._location, pending, leftover.token_id,
            )  # fmt: skip
            return
        raise PendingRotationError(
            self._location, view.arn or self._settings.secret_id, self._settings.region_name, pending, current
        )

    def _describe(self) -> SecretView | None:
        return describe(self._client(), self._settings.secret_id, self._location)

    def _replica(self, view: SecretView | None) -> ReplicaSecretError:
        """The error for a secret ``view`` shows to be a replica (None, or not shown so: the primary unknown)."""
        if view is None:
            return ReplicaSecretError(self._location, self._settings, None, None)
        primary = view.primary_region if view.is_replica_in(self._settings.region_name) else None
        return ReplicaSecretError(self._location, self._settings, primary, view.arn)

    def _replica_refused(self) -> ReplicaSecretError:
        """PutSecretValue was refused as a write to a replica: DescribeSecret names the primary's region, if it can."""
        try:
            view = self._describe()
        except RotatorError:  # the refusal is the error to report; the region is only a help
            view = None
        return self._replica(view)

    def _read(self, stage: str) -> tuple[str, Mapping[str, Any] | None] | None:
        return read_stage(self._client(), self._settings.secret_id, stage, self._location)

    def _parse(self, payload: Mapping[str, Any] | None, version: str, *, strict: bool) -> TokenRecord | None:
        where = f"{self._location} version {version}"
        if payload is None:
            if strict:
                raise MalformedPayload(
                    f"{where}: the value is not a JSON object rotator can read (not JSON, not an object, or "
                    "nested thousands of levels deep)",
                    hint=MALFORMED_HINT,
                )
            return None
        try:
            return TokenRecord.from_payload(payload, where=where)
        except PermanentError:
            if strict:
                raise
            return None

    def _client(self) -> SecretsManagerAPI:
        if self._api is None:
            self._api = self._factory(self._settings, self._policy)
            if self._factory is boto3_client:  # a client of its own: count what it sends (each attempt)
                client: Any = self._api
                client.meta.events.register("before-send.secrets-manager", self._count_request)
        return self._api

    def _count_request(self, **_event: Any) -> None:
        self._sent += 1  # returns None: botocore sends the request

    def _check(self, operation: str, answer: Mapping[str, Any], secret_id: str | None = None, *,
               version: bool = False, version_id: str | None = None) -> None:
        """:func:`check_answer` of a write's answer, about ``secret_id`` (default: the store's)."""
        check_answer(self._client(), self._location, operation, answer, secret_id or self._settings.secret_id,
                     version=version, version_id=version_id)

    def _call(self, operation: str, fn: Callable[[SecretsManagerAPI], T]) -> T:
        api = self._client()
        with map_errors(self._location, operation, kms_key_id=self._settings.kms_key_id,
                        profile=self._settings.profile, secret_id=self._settings.secret_id,
                        region=self._settings.region_name):
            return fn(api)


if TYPE_CHECKING:  # static conformance: mypy checks AwsSecretsManagerStore against the Store Protocol
    _conforms: type[Store] = AwsSecretsManagerStore


# -- errors -----------------------------------------------------------------------------------------


def accepts_parameter(api: object, operation: str, name: str) -> bool:
    """Whether ``api``'s botocore service model lets ``operation`` take the parameter ``name`` (a
    botocore older than the API lacks it, and refuses it only when the call is made). True when the
    client cannot tell: one without a botocore model (a wrapper, a fake) is left to the call itself."""
    try:
        service = api.meta.service_model  # type: ignore[attr-defined]
        if operation not in service.operation_names:
            return True
        members = service.operation_model(operation).input_shape.members
    except AttributeError:
        return True
    return name in members


def client_error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def map_errors(
    where: str, operation: str, *, kms_key_id: str | None = None, profile: str | None = None,
    secret_id: str | None = None, region: str | None = None,
) -> Iterator[None]:
    """botocore exceptions -> rotator errors, without the SDK's text (``from None``). ``profile``: the
    store's setting, to say where a profile that does not exist was named; ``secret_id`` and ``region``:
    the secret called, for the commands a hint prints (None: not known, a placeholder is printed)."""
    try:
        yield
    except RotatorError:
        raise
    except botocore.exceptions.ClientError as exc:
        raise _client_error(exc, where, operation, kms_key_id, _secret_args(secret_id, region)) from None
    except botocore.exceptions.SSLError:
        raise PermanentError(
            _ERR_TLS.format(where=where, operation=operation), hint="fix endpoint_url, or the CA bundle (AWS_CA_BUNDLE)"
        ) from None
    except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as exc:
        cause = type(exc).__name__
        raise TransientError(
            _ERR_UNREACHABLE.format(where=where, operation=operation, cause=cause), hint=_HINT_RETRY
        ) from None
    except botocore.exceptions.ProfileNotFound as exc:
        raise _profile_not_found(where, exc, profile) from None
    except (
        botocore.exceptions.NoCredentialsError,
        botocore.exceptions.PartialCredentialsError,
        botocore.exceptions.CredentialRetrievalError,
    ) as exc:
        raise ConfigError(
            f"{where}: no usable AWS credentials for {operation} ({type(exc).__name__})", hint=_HINT_CREDENTIALS
        ) from None
    except botocore.exceptions.ParamValidationError as exc:
        # Its text can quote a parameter's value: never shown, but for the names of parameters this
        # botocore does not know (an SDK older than the call), which are rotator's own keywords.
        unknown = _UNKNOWN_PARAMETER.findall(str(exc))
        if unknown:
            raise PermanentError(
                f"{where}: {operation}: "
                + "; ".join(f'Unknown parameter in input: "{name}"' for name in dict.fromkeys(unknown))
                + f" (botocore {botocore.__version__})",
                hint=HINT_OLD_SDK.format(parameter=", ".join(dict.fromkeys(unknown))),
            ) from None
        raise PermanentError(
            f"{where}: {operation}: botocore refused the request parameters",
            hint="check the store settings (secret_id, kms_key_id)",
        ) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise PermanentError(
            f"{where}: {operation} failed in botocore ({type(exc).__name__})", hint=_HINT_AWS
        ) from None


#: The variables botocore takes a profile from when none is given, the first set winning.
_PROFILE_VARIABLES = ("AWS_DEFAULT_PROFILE", "AWS_PROFILE")


def _profile_not_found(where: str, exc: botocore.exceptions.ProfileNotFound, setting: str | None) -> ConfigError:
    name = str(getattr(exc, "kwargs", {}).get("profile", ""))
    shown = reprlib.repr(name)
    files = "~/.aws/config (or the file $AWS_CONFIG_FILE names) and ~/.aws/credentials"
    variable = next((v for v in _PROFILE_VARIABLES if os.environ.get(v)), None)
    if setting is None and variable is not None and os.environ[variable] == name:
        # The store sets no profile: botocore took it from the environment.
        return ConfigError(
            f"{where}: the AWS profile {shown} that ${variable} names does not exist",
            hint=f"unset ${variable} for rotator (the standard chain then applies), set it to a profile of {files}, "
            "or name one in the store's `profile` setting (it takes precedence)",
        )
    source = "the store's `profile` setting names" if setting is not None and setting == name else "named"
    return ConfigError(
        f"{where}: the AWS profile {shown} {source} does not exist",
        hint=f"add [profile {name}] to {files}, or name an existing profile in the store's `profile` setting"
        if len(name) <= 64 and name.isprintable() else f"check the profiles of {files}",
    )


def _secret_args(secret_id: str | None, region: str | None) -> str:
    """``--secret-id ... --region ...`` for a printed command, quoted for the shell (placeholders if unknown)."""
    args = f"--secret-id {shlex.quote(secret_id) if secret_id else 'SECRET_ID'}"
    return args + (f" --region {shlex.quote(region)}" if region else "")


def _client_error(
    exc: botocore.exceptions.ClientError, where: str, operation: str, kms_key_id: str | None,
    secret_args: str = _secret_args(None, None),
) -> RotatorError:
    code = client_error_code(exc) or "an unknown error"
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    aws_message = str(exc.response.get("Error", {}).get("Message", ""))
    actual_operation = getattr(exc, "operation_name", None) or operation
    detail = REDACTOR.redact(" ".join(aws_message.split()))[:300]
    if detail.lstrip().startswith("<"):
        detail = ""  # an HTML error page (a proxy, a load balancer): nothing useful to show
    message = _ERR_CALL.format(
        where=where, operation=actual_operation, code=code, detail=f" ({detail})" if detail else ""
    )
    if code in _THROTTLING or status == 429 or status >= 500:
        return TransientError(message, hint=_HINT_RETRY)
    key = f" ({kms_key_id})" if kms_key_id else ""
    denied = code in ("AccessDeniedException", "AccessDenied")
    # The action AWS names decides (CreateSecret with Tags may lack secretsmanager:TagResource; a role_arn
    # call, sts:AssumeRole), not a mention of "kms" anywhere in its message: a role or secret may be named so.
    named = re.search(_DENIED_ACTION, aws_message) if denied else None
    action = named[1] if named else None
    service = action.split(":", 1)[0].lower() if action else None
    if code in _KMS_CODES or (denied and (service == "kms" or re.search(_KMS_DENIED, aws_message))):
        return PermanentError(message, hint=_HINT_KMS.format(key=key))
    if denied:
        if action is None or service not in ("secretsmanager", "sts"):  # none named, or not one this hint fits
            service = "sts" if actual_operation == "AssumeRole" else "secretsmanager"
            action = f"{service}:{actual_operation}"
        resource = "the role to assume" if service == "sts" else "the secret"
        return PermanentError(message, hint=_HINT_DENIED.format(action=action, resource=resource))
    if code in _BAD_CREDENTIALS:
        return PermanentError(message, hint=_HINT_CREDENTIALS)
    if code == "ResourceNotFoundException":
        return PermanentError(message, hint=_HINT_NOT_FOUND)
    if code == "InvalidRequestException" and _MARKED_DELETED.search(aws_message):
        # Retrying cannot help, and once the secret is purged its rotator:revoke:<id> tags go with it:
        # the tokens they record would stay valid until they expire.
        return PermanentError(message, hint=_HINT_DELETED.format(secret=secret_args))
    return PermanentError(message, hint=_HINT_AWS)
