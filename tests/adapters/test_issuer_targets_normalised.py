"""Each place has one target text, however the settings spell it (contracts.Issuer ``target()``).

The journal compares a run's recorded target with the issuer's as text: two spellings of one place
would make a revocation there need attention, and (worse) two places with one text would let a token
of the first be found "not listed" at the second and marked revoked while it stays valid. So every
issuer kind that can name a place spells it alike (an IPv6 address in its shortest form, a host name
in its ASCII form, a Dedicated id as a canonical UUID), and the management-api Clustered target is the
host its management calls go to (``base_url`` when set).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rotator.adapters.http.common import url_target
from rotator.adapters.http.influxdb2 import InfluxDB2Issuer, InfluxDB2Settings
from rotator.adapters.http.influxdb3 import InfluxDB3Issuer, InfluxDB3Settings
from rotator.adapters.http.management_api import ManagementApiIssuer, ManagementApiSettings
from rotator.adapters.influxctl.database import InfluxctlDatabaseIssuer, InfluxctlDatabaseSettings
from rotator.adapters.influxctl.management import InfluxctlManagementIssuer, InfluxctlManagementSettings
from rotator.adapters.influxctl.profile import connection_target
from rotator.config.adapter_settings import validate_settings
from rotator.core.contracts import AdapterContext, target_of

ACCOUNT = "11111111-1111-4111-8111-111111111111"
CLUSTER = "33333333-3333-4333-8333-333333333333"
OTHER_CLUSTER = "44444444-4444-4444-8444-444444444444"

#: one place, several spellings: (host as an influxctl profile writes it, as a URL writes it)
SAME_HOST = {
    "ipv6": ["2001:db8::1", "2001:DB8:0:0:0:0:0:1", "[2001:db8:0000::0001]"],
    "ipv6 with a zone id": ["fe80::1%eth0", "FE80:0:0:0:0:0:0:1%eth0"],
    "ipv6 mapped ipv4": ["::ffff:192.0.2.1", "::ffff:c000:201", "0:0:0:0:0:FFFF:C000:0201"],
    "idn": ["bücher.example", "xn--bcher-kva.example", "XN--BCHER-KVA.Example.", "Bücher.example"],
    "idn, not IDNA 2003's ss": ["faß.example", "xn--fa-hia.example"],
    "idn below an ascii label": ["cluster.bücher.example", "cluster.xn--bcher-kva.example"],
}
#: hosts of different places, pairwise
OTHER_HOSTS = ["2001:db8::1", "2001:db8::2", "::ffff:192.0.2.2", "192.0.2.1", "bücher.example", "bucher.example",
               "fass.example", "faß.example", "cluster.bücher.example"]


def _url_host(host: str) -> str:
    return f"[{host.strip('[]').replace('%', '%25')}]" if ":" in host else host  # (RFC 6874: a zone id's %)


# ------------------------------------------------------------------------------- how each kind names it

def influxctl_management(tmp_path: Path, **profile: object) -> str | None:
    settings = validate_settings(InfluxctlManagementSettings, {"profile": profile})
    return target_of(InfluxctlManagementIssuer(settings, base_dir=tmp_path))


def influxctl_database(tmp_path: Path, **profile: object) -> str | None:
    settings = validate_settings(InfluxctlDatabaseSettings, {
        "profile": profile, "auth": {"method": "mgmt_token", "token": {"file": "mgmt.token"}},
        "permissions": {"read": ["db1"]}})
    return target_of(InfluxctlDatabaseIssuer(settings, base_dir=tmp_path))


def management_api(tmp_path: Path, **raw: object) -> str | None:
    settings = ManagementApiSettings.model_validate({
        "management_token": {"env": "T"}, "verify": {"database": "telemetry"},
        "permissions": [{"action": "read", "resource": "telemetry"}], **raw})
    return target_of(ManagementApiIssuer.from_config(settings, AdapterContext("p", base_dir=tmp_path)))


def influxdb3(url: str) -> str | None:
    settings = InfluxDB3Settings.model_validate({"base_url": url, "credential": "self"})
    return target_of(InfluxDB3Issuer.from_config(settings, AdapterContext("p")))


def influxdb2(url: str) -> str | None:
    settings = InfluxDB2Settings.model_validate({"base_url": url, "org_id": "0123456789abcdef",
                                                 "credential": {"env": "T"}, "copy_from_authorization_id": "0" * 16})
    return target_of(InfluxDB2Issuer.from_config(settings, AdapterContext("p")))


def clustered_targets(tmp_path: Path, host: str) -> dict[str, str | None]:
    """The target of a Clustered cluster at ``host``:8443, named by every kind that can name it."""
    url = f"https://{_url_host(host)}:8443"
    return {
        "influxctl-management": influxctl_management(tmp_path, product="clustered", host=host, port=8443),
        "influxctl-database": influxctl_database(tmp_path, product="clustered", host=host, port=8443),
        "influxctl-profile store": connection_target({"product": "clustered", "host": host, "port": "8443"}),
        "management-api": management_api(tmp_path, product="clustered", cluster_host=url),
        "management-api, base_url": management_api(tmp_path, product="clustered", cluster_host=url,
                                                    base_url=f"{url}/api/v0"),
    }


def server_targets(host: str) -> dict[str, str | None]:
    """The target of an InfluxDB 3 / v2 server at ``host``:8181."""
    url = f"https://{_url_host(host)}:8181"
    return {"influxdb3": influxdb3(url), "influxdb2": influxdb2(url), "url_target": url_target(url)}


# ------------------------------------------------------------------------------------ one place, one text

@pytest.mark.parametrize("case", SAME_HOST)
def test_every_spelling_of_one_host_gives_one_target_for_every_issuer_kind(tmp_path: Path, case: str) -> None:
    spellings = SAME_HOST[case]
    clustered = {(kind, host): target for host in spellings
                 for kind, target in clustered_targets(tmp_path, host).items()}
    assert len(set(clustered.values())) == 1, clustered
    servers = {(kind, host): target for host in spellings for kind, target in server_targets(host).items()}
    assert len(set(servers.values())) == 1, servers
    (text,) = set(servers.values())
    assert text is not None and text.isascii() and text == text.lower() and text.endswith(":8181"), text


def test_the_spellings_chosen(tmp_path: Path) -> None:
    """What the journal records (its format): shortest IP form, IPv6 in brackets, names in ASCII, UUIDs
    canonical; and what it recorded before for a plain name."""
    def clustered(host: str, port: int | None = None) -> str | None:
        return influxctl_management(tmp_path, product="clustered", host=host, port=port)

    def dedicated(account: str) -> str | None:
        return influxctl_management(tmp_path, product="dedicated", account_id=account, cluster_id=CLUSTER)

    assert clustered("2001:DB8:0:0:0:0:0:1") == "clustered [2001:db8::1]:443"
    assert clustered("[::ffff:c000:201]", 8181) == "clustered [::ffff:192.0.2.1]:8181"
    assert clustered("192.0.2.1", 80) == "clustered 192.0.2.1:80"
    assert clustered("Bücher\u3002Example.") == "clustered xn--bcher-kva.example:443"  # an ideographic full stop
    assert clustered("Cluster-A.example.com.") == "clustered cluster-a.example.com:443"  # as before
    assert dedicated(ACCOUNT.replace("-", "").upper()) == dedicated("{" + ACCOUNT + "}") == \
        f"dedicated {ACCOUNT}/{CLUSTER}"
    assert dedicated(" Not-A-UUID ") == f"dedicated not-a-uuid/{CLUSTER}"


def test_a_punycode_host_that_does_not_decode_still_has_a_target(tmp_path: Path) -> None:
    """httpx's ``host`` decodes punycode to Unicode, and raises on an A-label that does not decode (which
    management-api's settings let through); the target reads the host as httpx sends it."""
    assert management_api(tmp_path, product="clustered", cluster_host="https://xn--zz.example") == \
        "clustered xn--zz.example:443"


@pytest.mark.parametrize("account, cluster", [
    (ACCOUNT.replace("-", ""), CLUSTER),
    (ACCOUNT.upper(), CLUSTER.replace("-", "").upper()),
    ("{" + ACCOUNT + "}", f"urn:uuid:{CLUSTER}"),
    (f" {ACCOUNT} ", CLUSTER),
])
def test_every_spelling_of_a_dedicated_cluster_gives_one_target(tmp_path: Path, account: str, cluster: str) -> None:
    expected = f"dedicated {ACCOUNT}/{CLUSTER}"
    targets = {
        "influxctl-management": influxctl_management(tmp_path, product="dedicated", account_id=account,
                                                     cluster_id=cluster),
        "influxctl-database": influxctl_database(tmp_path, product="dedicated", account_id=account,
                                                 cluster_id=cluster, host="x.a.influxdb.io"),
        "influxctl-profile store": connection_target({"product": "dedicated", "account_id": account,
                                                      "cluster_id": cluster}),
        "management-api": management_api(tmp_path, product="dedicated", account_id=account.strip(),
                                         cluster_id=cluster, cluster_host="https://x.a.influxdb.io"),
    }
    assert targets == dict.fromkeys(targets, expected)


# ------------------------------------------------------------------------------- other places, other texts

@pytest.mark.parametrize("name, targets_of", [
    ("clustered", lambda tmp_path, host: clustered_targets(tmp_path, host)),
    ("servers", lambda tmp_path, host: server_targets(host)),
])
def test_different_hosts_give_different_targets(
        tmp_path: Path, name: str, targets_of: Callable[[Path, str], dict[str, str | None]]) -> None:
    by_host = {host: set(targets_of(tmp_path, host).values()) for host in OTHER_HOSTS}
    assert all(len(targets) == 1 for targets in by_host.values()), by_host
    assert len({next(iter(targets)) for targets in by_host.values()}) == len(OTHER_HOSTS), by_host


def test_different_dedicated_clusters_give_different_targets(tmp_path: Path) -> None:
    def both(cluster: str) -> set[str | None]:
        return {influxctl_management(tmp_path, product="dedicated", account_id=ACCOUNT, cluster_id=cluster),
                management_api(tmp_path, product="dedicated", account_id=ACCOUNT, cluster_id=cluster,
                               cluster_host="https://x.a.influxdb.io")}

    assert both(CLUSTER) == {f"dedicated {ACCOUNT}/{CLUSTER}"}
    assert both(OTHER_CLUSTER) == {f"dedicated {ACCOUNT}/{OTHER_CLUSTER}"}


def test_management_api_clustered_names_the_host_its_management_calls_go_to(tmp_path: Path) -> None:
    """The reviewer's case 4: tokens are listed and revoked through ``base_url``; moving it to cluster B
    with ``cluster_host`` left at A is a move (a token of A is not listed at B, and must not be marked
    revoked there)."""
    at_a = management_api(tmp_path, product="clustered", cluster_host="https://cluster-a.example.com",
                          base_url="https://mgmt.cluster-a.example.com/api/v0")
    at_b = management_api(tmp_path, product="clustered", cluster_host="https://cluster-a.example.com",
                          base_url="https://mgmt.cluster-b.example.com/api/v0")
    assert at_a == "clustered mgmt.cluster-a.example.com:443"
    assert at_b == "clustered mgmt.cluster-b.example.com:443"
    on_port = management_api(tmp_path, product="clustered", cluster_host="https://cluster-a.example.com",
                             base_url="https://cluster-a.example.com:8443/api/v0")
    assert on_port == "clustered cluster-a.example.com:8443"


def test_management_api_without_base_url_keeps_its_target(tmp_path: Path) -> None:
    """No base_url: the default one is on cluster_host, and the target is the one recorded before (no
    spurious "needs attention" after an upgrade), the same as influxctl's and an explicit default's."""
    expected = "clustered cluster-a.example.com:443"
    assert management_api(tmp_path, product="clustered", cluster_host="https://cluster-a.example.com") == expected
    assert management_api(tmp_path, product="clustered", cluster_host="Cluster-A.example.com:443") == expected
    assert management_api(tmp_path, product="clustered", cluster_host="https://cluster-a.example.com",
                          base_url="https://cluster-a.example.com/api/v0") == expected
    assert influxctl_management(tmp_path, product="clustered", host="cluster-a.example.com") == expected


def test_management_api_dedicated_is_named_by_its_ids_whatever_the_account_api(tmp_path: Path) -> None:
    """Dedicated calls go to the account API, one for every account and cluster: the ids name the place."""
    expected = f"dedicated {ACCOUNT}/{CLUSTER}"
    for base_url in (None, "https://console.influxdata.com/api/v0", "https://proxy.example.com/api/v0"):
        extra = {} if base_url is None else {"base_url": base_url}
        assert management_api(tmp_path, product="dedicated", account_id=ACCOUNT, cluster_id=CLUSTER,
                              cluster_host="https://x.a.influxdb.io", **extra) == expected
