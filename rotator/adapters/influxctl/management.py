"""Issuer ``influxctl-management``: InfluxDB Clustered / Cloud Dedicated management tokens.

Management tokens have no HTTP API; they are created, listed and revoked only through
``influxctl management create|list|revoke`` (influxctl >= 2.9.7 for ``--timeout``). Each call
runs with a private one-profile config (see :mod:`rotator.adapters.influxctl.common`).

Policy settings::

    [policy.issuer]
    type = "influxctl-management"
    influxctl = "/usr/local/bin/influxctl"       # default: "influxctl" on PATH
    timeout_s = 60                               # per influxctl call
    [policy.issuer.profile]
    product = "clustered"                        # or "dedicated" (then account_id + cluster_id)
    host = "influxdb.example.com"
    port = 443
    tls = { ca = "ca.pem" }                      # also insecure, disable, cert, key
    [policy.issuer.auth]
    method = "self"                              # default: the token the store holds now
    # method = "token_file", token_file = "/etc/influxdb/token.json"   (Clustered admin token)
    # method = "mgmt_token", token = { env = "INFLUX_MGMT_TOKEN" }     (a separate token; or file = ...)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from rotator.adapters.influxctl.common import (
    InfluxctlIssuer,
    InfluxctlSettings,
    ProfileAuth,
    minted_token,
    output_error,
    parse_json_array,
    rfc3339,
    token_info,
)
from rotator.core.contracts import Issuer, MintedToken, MintRequest
from rotator.core.secret import Secret

__all__ = ["InfluxctlManagementIssuer", "InfluxctlManagementSettings"]

CREATE = ("management", "create")
LIST = ("management", "list", "--format", "json")
REVOKE = ("management", "revoke", "--force")
CREATE_CMD = "influxctl management create"
LIST_CMD = "influxctl management list"

ERR_ID_NOT_FOUND = (
    "printed no token id, and `influxctl management list` shows {count} tokens with description {description!r} "
    "and the new token's prefix"
)


# The fields of InfluxctlSettings, as they are: influxctl, profile, auth (default "self": the token
# the stores hold now) and timeout_s. Not decorated again: it adds no field, and a second
# @dataclass would only compile the same methods again (~0.7 ms of every Lambda cold start).
class InfluxctlManagementSettings(InfluxctlSettings):
    """Settings of the ``influxctl-management`` issuer."""


class InfluxctlManagementIssuer(InfluxctlIssuer[InfluxctlManagementSettings]):
    """Mints, verifies, lists and revokes management tokens with ``influxctl management``.

    ``revoke`` (``management revoke --force``, confirmed by ``revoked_at`` in the list) and
    ``list_tokens`` (every management token, revoked ones included) come from
    :class:`~rotator.adapters.influxctl.common.InfluxctlIssuer`.
    """

    kind: ClassVar[str] = "influxctl-management"
    settings_model: ClassVar[type[Any]] = InfluxctlManagementSettings
    token_noun: ClassVar[str] = "management token"
    list_args: ClassVar[tuple[str, ...]] = LIST
    revoke_args: ClassVar[tuple[str, ...]] = REVOKE

    def mint(self, request: MintRequest, credential: Secret | None) -> MintedToken:
        """``influxctl management create``; the token is the last stdout line.

        The id comes from the table influxctl >= 2.11 prints, else from ``management list``
        (see :meth:`_created_id`).
        """
        auth = self._auth(credential)
        expires = rfc3339(request.expires_at)  # refuses a naive datetime
        stdout = self._run([*CREATE, "--description", request.description, "--expires-at", expires], auth)
        return minted_token(
            stdout, CREATE_CMD, request.expires_at, lambda value: self._created_id(value, request.description, auth)
        )

    def verify(self, token: Secret) -> None:
        """``influxctl management list`` as ``token``; TransientError while it is not accepted yet."""
        stdout = self._cli.run(LIST, ProfileAuth(mgmt_token=token), unauthenticated_is_transient=True)
        parse_json_array(stdout, LIST_CMD)

    # -- helpers --------------------------------------------------------------------------------

    def _created_id(self, value: Secret, description: str, auth: ProfileAuth) -> str:
        """The id of the token just created, when influxctl (<= 2.10) printed no table.

        It is the listed token with the run's description whose ``token_prefix`` (the first
        characters of the value) matches: a retried mint may have left one of the same name.
        """
        matches = []
        for index, item in enumerate(self._list(auth)):
            info, prefix = token_info(index, item, LIST_CMD), item.get("token_prefix")
            if info.description == description and (not isinstance(prefix, str) or value.reveal().startswith(prefix)):
                matches.append(info.token_id)
        if len(matches) != 1:
            raise output_error(CREATE_CMD, ERR_ID_NOT_FOUND.format(count=len(matches), description=description))
        return matches[0]


if TYPE_CHECKING:  # static conformance: mypy checks InfluxctlManagementIssuer against the Issuer Protocol
    _conforms: type[Issuer] = InfluxctlManagementIssuer
