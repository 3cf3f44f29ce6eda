"""deploy/: what this machine can check of the daemon's deployment (docs/deploy.md lists what
it cannot), plus the vault-kv2 store's Kubernetes auth.

1. The Vault policy (deploy/vault/rotator-policy.hcl) against OpenBao: a token holding only it
   lets the store read, publish twice with compare-and-set and renew itself; it is refused a
   neighbouring secret; and every KV capability in it is needed (metadata: patch, or update without it).
2. Kubernetes auth against OpenBao, whose kubernetes auth method asks a fake Kubernetes
   TokenReview API (HTTPS on loopback, a self-signed certificate made here).
3. The systemd unit: `systemd-analyze verify`, its offline security score, the sandboxing.
4. The Helm chart rendered by Helm's own engine (helm-python-sdk binds Helm v4's Go library),
   every manifest validated against the Kubernetes OpenAPI schemas (kubernetes-validate),
   the PrometheusRule checked and unit-tested by promtool, the render-time refusals.
5. The Dockerfile parsed (dockerfile-parse) and linted (hadolint), its build context computed
   from the ignore file, and its HEALTHCHECK command run against a local HTTP server.
6. The journal connection taken from libpq's environment (how the chart passes the password).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import http.server
import importlib.util
import ipaddress
import json
import logging
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import hvac
import psycopg
import pytest
import yaml

from rotator.config.daemon_config import DaemonSettings, parse_listen
from rotator.config.policy import parse_config
from rotator.core.clock import FakeClock
from rotator.core.contracts import AdapterContext, TokenRecord
from rotator.core.errors import ConfigError, ConflictError, PermanentError, TransientError
from rotator.core.journal import open_journal
from rotator.core.secret import Secret
from rotator.runners.daemon import WATCHDOG_EVERY
from tests.servers import OpenBao

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "rotator"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
UNIT = DEPLOY / "systemd" / "rotator.service"
VAULT_POLICY = DEPLOY / "vault" / "rotator-policy.hcl"

POLICY = "influx-mgmt"
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
SHUTDOWN_TIMEOUT_S = DaemonSettings().shutdown_timeout.total_seconds()
INSTALL_HINT = "install the dev extras: pip install -e '.[dev]' (docs/deploy.md lists the tools)"


def need_module(name: str) -> Any:
    """Import a checking tool; a clear failure (not a skip) when CI lacks it."""
    try:
        return __import__(name)
    except ImportError:
        pytest.fail(f"python module {name!r} is missing: {INSTALL_HINT}")


def need_program(name: str, *extra_dirs: str) -> str:
    found = shutil.which(name) or shutil.which(
        name, path=os.pathsep.join([str(Path(sys.executable).parent), *extra_dirs])
    )
    if not found:
        pytest.fail(f"program {name!r} is missing: {INSTALL_HINT}")
    return found


def daemon_args(argv: list[str]) -> argparse.Namespace:
    """``argv`` (what follows ``rotator daemon``) parsed by the daemon's own argument parser."""
    from rotator.runners.daemon import add_parser

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config")
    common.add_argument("--log-level")
    common.add_argument("--log-format")
    common.add_argument("--log-file")
    parser = argparse.ArgumentParser(prog="rotator", exit_on_error=False)
    add_parser(parser.add_subparsers(dest="command"), common)
    return parser.parse_args(["daemon", *argv])


def token_record(token_id: str) -> TokenRecord:
    return TokenRecord(
        value=Secret(f"test-token-value-{uuid.uuid4().hex}"),
        token_id=token_id,
        issuer="influxctl-management",
        policy=POLICY,
        created_at=NOW,
        expires_at=NOW + dt.timedelta(days=30),
    )


def make_store(
    openbao: OpenBao, path: str, tmp_path: Path, auth: dict[str, Any], clock: FakeClock | None = None
) -> Any:
    from rotator.adapters.vault.kv2 import VaultKV2Settings, VaultKV2Store

    settings = VaultKV2Settings.model_validate({"url": openbao.url, "path": path, "auth": auth})
    ctx = AdapterContext(policy=POLICY, base_dir=tmp_path, clock=clock or FakeClock(NOW))
    return VaultKV2Store.from_config(settings, ctx)


def token_auth(tmp_path: Path, token: str) -> dict[str, Any]:
    (tmp_path / "vault-token").write_text(token)
    return {"method": "token", "token": {"file": "vault-token"}}


# == 1. the Vault policy ==================================================================

HCL_STANZA = re.compile(r'^path\s+"(?P<path>[^"]+)"\s*\{\s*capabilities\s*=\s*\[(?P<caps>[^\]]*)\]\s*\}', re.M)


def policy_stanzas(hcl: str) -> dict[str, set[str]]:
    """``path -> capabilities`` of the uncommented stanzas."""
    return {m["path"]: set(re.findall(r'"([a-z]+)"', m["caps"])) for m in HCL_STANZA.finditer(hcl)}


def rotator_policy(mount: str, path: str, *, drop: tuple[str, str] | None = None) -> str:
    """deploy/vault/rotator-policy.hcl with its placeholders substituted as its comment says;
    ``drop=(path, capability)`` removes one capability (to prove it is needed; capabilities
    joined by ``+`` remove several)."""
    text = VAULT_POLICY.read_text()
    text = text.replace("<mount>", mount).replace("<path>", path)
    if drop is not None:
        stanzas = policy_stanzas(text)
        stanzas[drop[0]].difference_update(drop[1].split("+"))
        text = "\n".join(
            f'path "{p}" {{ capabilities = [{", ".join(f"{chr(34)}{c}{chr(34)}" for c in sorted(caps))}] }}'
            for p, caps in stanzas.items()
        )
    return text


def policy_token(openbao: OpenBao, hcl: str) -> str:
    """A token with this policy only (no `default`), renewable."""
    name = f"rotator-{uuid.uuid4().hex[:8]}"
    openbao.write_policy(name, hcl)
    return openbao.create_token(name, ttl="1h", no_default_policy=True, renewable=True)


def test_vault_policy_grants_exactly_the_documented_paths():
    stanzas = policy_stanzas(VAULT_POLICY.read_text())

    assert stanzas == {
        "<mount>/data/<path>": {"create", "read", "update"},
        "<mount>/metadata/<path>": {"read", "update", "patch"},
        "auth/token/lookup-self": {"read"},
        "auth/token/renew-self": {"update"},
    }
    assert "sed -e 's|<mount>|" in VAULT_POLICY.read_text()  # the substitution is documented in the file


def test_vault_policy_lets_the_store_read_publish_with_cas_and_renew(openbao, kv_path, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="rotator.adapters.vault_kv2")
    token = policy_token(openbao, rotator_policy("secret", kv_path))
    clock = FakeClock(NOW)
    store = make_store(openbao, kv_path, tmp_path, token_auth(tmp_path, token), clock)

    assert store.read_current().version is None
    first, second = token_record("tok-1"), token_record("tok-2")
    assert store.publish(first, None) == "1"
    current = store.read_current()
    assert (current.version, current.managed, current.record.token_id) == ("1", True, "tok-1")
    clock.advance(dt.timedelta(minutes=50))  # past 2/3 of the 1h TTL: the next call renews
    assert store.publish(second, "1") == "2"
    previous = store.read_previous()
    assert (previous.version, previous.record.token_id) == ("1", "tok-1")
    with pytest.raises(ConflictError):  # compare-and-set is enforced: a stale version loses
        store.publish(token_record("tok-3"), "1")

    assert store.read_current().record.token_id == "tok-2"
    looked_up = openbao.client().auth.token.lookup(token)["data"]
    assert len(looked_up["policies"]) == 1 and "default" not in looked_up["policies"]
    assert looked_up.get("last_renewal_time"), "renew-self was not used"
    assert "lookup-self denied" not in caplog.text


@pytest.mark.parametrize("neighbour", ["{path}-other", "{path}/child", "{parent}/other"])
def test_vault_policy_denies_a_neighbouring_secret(openbao, kv_path, tmp_path, neighbour):
    token = policy_token(openbao, rotator_policy("secret", kv_path))
    other = neighbour.format(path=kv_path, parent=kv_path.rsplit("/", 1)[0])
    store = make_store(openbao, other, tmp_path, token_auth(tmp_path, token))

    with pytest.raises(PermanentError, match=r"HTTP 403") as read:
        store.read_current()
    with pytest.raises(PermanentError, match=r"HTTP 403") as write:
        store.publish(token_record("tok-1"), None)

    assert f"secret/metadata/{other}" in str(read.value)
    assert f"secret/data/{other}" in str(write.value)
    root = openbao.client()
    with pytest.raises(hvac.exceptions.InvalidPath):  # nothing was written there
        root.secrets.kv.v2.read_secret_metadata(path=other, mount_point="secret")


@pytest.mark.parametrize(
    "drop",
    [
        ("secret/data/{path}", "create"),
        ("secret/data/{path}", "read"),
        ("secret/data/{path}", "update"),
        ("secret/metadata/{path}", "read"),
        ("secret/metadata/{path}", "patch+update"),
    ],
    ids=lambda d: f"{d[0].split('/')[1]}-{d[1]}" if isinstance(d, tuple) else str(d),
)
def test_vault_policy_every_kv_capability_is_needed(openbao, kv_path, tmp_path, drop):
    path, capability = drop[0].format(path=kv_path), drop[1]
    token = policy_token(openbao, rotator_policy("secret", kv_path, drop=(path, capability)))
    store = make_store(openbao, kv_path, tmp_path, token_auth(tmp_path, token))

    # Without metadata patch and update the version lands first: the store says so as a transient failure,
    # which leaves the run to recovery (cacf226); every other missing capability refuses before anything lands.
    expected = TransientError if drop == ("secret/metadata/{path}", "patch+update") else PermanentError
    with pytest.raises(expected, match=r"HTTP 403") as caught:
        store.read_current()
        store.publish(token_record("tok-1"), None)
        store.read_current()
        store.publish(token_record("tok-2"), "1")
    assert path in str(caught.value)


@pytest.mark.parametrize("drop", ["patch", "update"])
def test_vault_policy_metadata_patch_or_update_is_enough_and_patch_is_the_one_without_a_race(
    openbao, kv_path, tmp_path, caplog, drop
):
    """patch: rotator's custom_metadata keys are merged in by Vault (OpenBao, Vault 1.9+). update is
    for a Vault without PATCH: rotator reads the map and writes it whole, and says once that patch
    would avoid losing an operator's key written in between."""
    caplog.set_level(logging.INFO, logger="rotator.adapters.vault_kv2")
    path = f"secret/metadata/{kv_path}"
    token = policy_token(openbao, rotator_policy("secret", kv_path, drop=(path, drop)))
    store = make_store(openbao, kv_path, tmp_path, token_auth(tmp_path, token))

    assert store.read_current().version is None
    assert store.publish(token_record("tok-1"), None) == "1"
    assert store.publish(token_record("tok-2"), "1") == "2"
    assert store.read_current().managed is True
    warned = "refused to patch the custom_metadata" in caplog.text
    assert warned == (drop == "patch")


# == 2. Kubernetes auth against OpenBao and a fake TokenReview API ========================

SA_NAMESPACE, SA_NAME, SA_UID = "rotator-ns", "rotator", "3f0c2e1a-0000-4000-8000-000000000001"
AUDIENCE = "vault"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


try:
    import cryptography  # noqa: F401  (a dev dependency through moto; openssl is the fallback)

    HAVE_CRYPTOGRAPHY = True
except ImportError:
    HAVE_CRYPTOGRAPHY = False


def _openssl(*args: str, data: bytes | None = None) -> bytes:
    result = subprocess.run([need_program("openssl"), *args], input=data, capture_output=True, check=True)
    return result.stdout


def _rs256(signing_input: bytes, key_dir: Path | None) -> bytes:
    """An RS256 signature with a fresh key: cryptography, or openssl into ``key_dir``."""
    if key_dir is None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    key_file = key_dir / "jwt-key.pem"
    if not key_file.exists():
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key_file))
    return _openssl("dgst", "-sha256", "-sign", str(key_file), data=signing_input)


def service_account_jwt(
    name: str = SA_NAME, namespace: str = SA_NAMESPACE, uid: str = SA_UID, *, openssl_dir: Path | None = None
) -> str:
    """A projected service account token as the kubelet writes it (RS256, a key made here)."""
    now = int(time.time())
    claims = {
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": f"system:serviceaccount:{namespace}:{name}",
        "aud": [AUDIENCE],
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "jti": uuid.uuid4().hex,
        "kubernetes.io": {
            "namespace": namespace,
            "pod": {"name": f"{name}-0", "uid": str(uuid.uuid4())},
            "serviceaccount": {"name": name, "uid": uid},
        },
    }
    header = {"alg": "RS256", "kid": "test", "typ": "JWT"}
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    if openssl_dir is None and not HAVE_CRYPTOGRAPHY:
        openssl_dir = Path(tempfile.gettempdir()) / f"rotator-test-jwt-{os.getpid()}"
        openssl_dir.mkdir(exist_ok=True)
    return f"{signing_input}.{_b64url(_rs256(signing_input.encode(), openssl_dir))}"


def self_signed_cert(directory: Path, *, use_openssl: bool = not HAVE_CRYPTOGRAPHY) -> tuple[Path, Path, str]:
    """``(cert.pem, key.pem, PEM text)`` for 127.0.0.1: cryptography if installed, else openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    if use_openssl:
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
            "-subj", "/CN=fake-kube-apiserver", "-addext", "subjectAltName=IP:127.0.0.1",
            "-addext", "basicConstraints=critical,CA:TRUE", "-keyout", str(key), "-out", str(cert),
        )  # fmt: skip
        return cert, key, cert.read_text()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-kube-apiserver")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    cert.write_text(pem)
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert, key, pem


@dataclass
class FakeKubeAPI:
    """The TokenReview endpoint of a Kubernetes API server: tokens in ``valid`` authenticate."""

    url: str
    ca_pem: str
    valid: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # jwt -> (namespace, name, uid)
    reviews: list[dict[str, Any]] = field(default_factory=list)

    def review(self, body: dict[str, Any]) -> dict[str, Any]:
        self.reviews.append(body)
        token = body.get("spec", {}).get("token", "")
        status: dict[str, Any] = {"authenticated": False, "error": "invalid bearer token"}
        if token in self.valid:
            namespace, name, uid = self.valid[token]
            status = {
                "authenticated": True,
                "user": {
                    "username": f"system:serviceaccount:{namespace}:{name}",
                    "uid": uid,
                    "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
                },
                "audiences": body["spec"].get("audiences") or [],
            }
        return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": body["spec"], "status": status}


@pytest.fixture(scope="module")
def kube_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKubeAPI]:
    cert, key, pem = self_signed_cert(tmp_path_factory.mktemp("kube-api-tls"))
    api: FakeKubeAPI

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/apis/authentication.k8s.io/v1/tokenreviews":
                self.send_error(404)
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            data = json.dumps(api.review(body)).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    api = FakeKubeAPI(url=f"https://127.0.0.1:{server.server_address[1]}", ca_pem=pem)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def k8s_mount(openbao: OpenBao, kube_api: FakeKubeAPI) -> str:
    """OpenBao's kubernetes auth method, at a mount path of its own, asking ``kube_api``."""
    mount = f"k8s-{uuid.uuid4().hex[:6]}"
    root = openbao.client()
    root.sys.enable_auth_method("kubernetes", path=mount)
    root.auth.kubernetes.configure(
        kubernetes_host=kube_api.url,
        kubernetes_ca_cert=kube_api.ca_pem,
        disable_local_ca_jwt=True,  # no pod token of its own: review with the client's JWT
        mount_point=mount,
    )
    return mount


def k8s_role(openbao: OpenBao, mount: str, policy: str, **options: Any) -> str:
    role = f"rotator-{uuid.uuid4().hex[:6]}"
    openbao.client().auth.kubernetes.create_role(
        role,
        bound_service_account_names=[SA_NAME],
        bound_service_account_namespaces=[SA_NAMESPACE],
        policies=[policy],
        audience=AUDIENCE,
        ttl="1h",
        mount_point=mount,
        **options,
    )
    return role


def k8s_policy(openbao: OpenBao, kv_path: str) -> str:
    name = f"rotator-k8s-{uuid.uuid4().hex[:6]}"
    openbao.write_policy(name, rotator_policy("secret", kv_path))
    return name


def test_openssl_fallback_makes_a_usable_certificate_and_jwt(tmp_path):
    """The path taken where cryptography is not installed, exercised here anyway."""
    cert, key, pem = self_signed_cert(tmp_path, use_openssl=True)
    jwt = service_account_jwt(openssl_dir=tmp_path)

    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    client = ssl.create_default_context(cadata=pem)
    assert client.verify_mode == ssl.CERT_REQUIRED
    header, claims = (json.loads(base64.urlsafe_b64decode(part + "==")) for part in jwt.split(".")[:2])
    signature = base64.urlsafe_b64decode(jwt.split(".")[2] + "==")
    assert header["alg"] == "RS256" and claims["kubernetes.io"]["serviceaccount"]["name"] == SA_NAME
    public = _openssl("pkey", "-in", str(tmp_path / "jwt-key.pem"), "-pubout")
    (tmp_path / "pub.pem").write_bytes(public)
    (tmp_path / "sig").write_bytes(signature)
    verified = _openssl("dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"), "-signature", str(tmp_path / "sig"),
                        data=jwt.rsplit(".", 1)[0].encode())  # fmt: skip
    assert b"Verified OK" in verified


def test_kubernetes_auth_logs_in_and_publishes(openbao, kube_api, k8s_mount, kv_path, tmp_path):
    role = k8s_role(openbao, k8s_mount, k8s_policy(openbao, kv_path))
    jwt = service_account_jwt()
    kube_api.valid[jwt] = (SA_NAMESPACE, SA_NAME, SA_UID)
    (tmp_path / "sa-token").write_text(jwt + "\n")
    auth = {"method": "kubernetes", "role": role, "jwt_file": "sa-token", "mount_path": k8s_mount}
    store = make_store(openbao, kv_path, tmp_path, auth)
    reviews_before = len(kube_api.reviews)

    assert store.read_current().version is None
    assert store.publish(token_record("tok-1"), None) == "1"
    assert store.publish(token_record("tok-2"), "1") == "2"

    assert store.read_current().record.token_id == "tok-2"
    new_reviews = kube_api.reviews[reviews_before:]
    assert len(new_reviews) == 1, "one login for the whole sequence"
    assert new_reviews[0]["spec"]["token"] == jwt
    assert new_reviews[0]["spec"]["audiences"] == [AUDIENCE]


def test_kubernetes_auth_logs_in_again_with_the_refreshed_token(
    openbao, kube_api, k8s_mount, kv_path, tmp_path, caplog
):
    role = k8s_role(openbao, k8s_mount, k8s_policy(openbao, kv_path))
    first, refreshed = service_account_jwt(), service_account_jwt()
    kube_api.valid[first] = kube_api.valid[refreshed] = (SA_NAMESPACE, SA_NAME, SA_UID)
    (tmp_path / "sa-token").write_text(first)
    auth = {"method": "kubernetes", "role": role, "jwt_file": str(tmp_path / "sa-token"), "mount_path": k8s_mount}
    store = make_store(openbao, kv_path, tmp_path, auth)
    assert store.publish(token_record("tok-1"), None) == "1"
    # The kubelet replaces the projected token; Vault's token of the first login expires (revoked here).
    (tmp_path / "sa-token").write_text(refreshed)
    del kube_api.valid[first]
    root = openbao.client()
    for accessor in root.list("auth/token/accessors")["data"]["keys"]:
        info = root.auth.token.lookup_accessor(accessor)["data"]
        if (info.get("meta") or {}).get("role") == role:
            root.auth.token.revoke_accessor(accessor)
    caplog.set_level(logging.DEBUG, logger="rotator.adapters.vault_kv2")

    assert store.publish(token_record("tok-2"), "1") == "2"

    assert "logging in again" in caplog.text
    assert kube_api.reviews[-1]["spec"]["token"] == refreshed


def test_kubernetes_auth_refused_is_permanent_and_names_the_role(openbao, kube_api, k8s_mount, kv_path, tmp_path):
    role = k8s_role(openbao, k8s_mount, k8s_policy(openbao, kv_path))
    jwt = service_account_jwt()  # the API server does not know it (a deleted service account)
    (tmp_path / "sa-token").write_text(jwt)
    auth = {"method": "kubernetes", "role": role, "jwt_file": "sa-token", "mount_path": k8s_mount}
    store = make_store(openbao, kv_path, tmp_path, auth)

    with pytest.raises(PermanentError) as caught:
        store.read_current()

    message = str(caught.value)
    assert f"log in to auth/{k8s_mount}/login: HTTP 403" in message
    assert role in caught.value.hint and "sa-token" in caught.value.hint
    assert jwt not in message and jwt not in caught.value.hint
    assert caught.value.__cause__ is None


def test_kubernetes_auth_of_another_service_account_is_refused(openbao, kube_api, k8s_mount, kv_path, tmp_path):
    role = k8s_role(openbao, k8s_mount, k8s_policy(openbao, kv_path))
    jwt = service_account_jwt(name="someone-else")
    kube_api.valid[jwt] = (SA_NAMESPACE, "someone-else", SA_UID)
    (tmp_path / "sa-token").write_text(jwt)
    auth = {"method": "kubernetes", "role": role, "jwt_file": "sa-token", "mount_path": k8s_mount}

    with pytest.raises(PermanentError, match=r"HTTP 403"):
        make_store(openbao, kv_path, tmp_path, auth).read_current()


def test_kubernetes_auth_without_its_token_file_is_a_config_error(openbao, kv_path, tmp_path):
    auth = {"method": "kubernetes", "role": "rotator", "jwt_file": "absent/token"}
    store = make_store(openbao, kv_path, tmp_path, auth)

    with pytest.raises(ConfigError, match=r"cannot read the Kubernetes service account token .*absent/token") as caught:
        store.read_current()
    assert "projected serviceAccountToken" in caught.value.hint


def test_kubernetes_auth_settings_defaults():
    from rotator.adapters.vault.kv2 import KubernetesAuth, VaultKV2Settings

    settings = VaultKV2Settings.model_validate(
        {"url": "https://vault.example:8200", "path": "p", "auth": {"method": "kubernetes", "role": "rotator"}}
    )

    assert isinstance(settings.auth, KubernetesAuth)
    assert settings.auth.jwt_file == Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    assert settings.auth.mount_path == "kubernetes"
    for bad in ({"role": ""}, {"role": "r", "jwt": "inline"}, {}):
        with pytest.raises(ValueError):
            VaultKV2Settings.model_validate(
                {"url": "https://vault.example:8200", "path": "p", "auth": {"method": "kubernetes", **bad}}
            )


# == 3. systemd ===========================================================================


def unit_directives(text: str) -> dict[str, dict[str, list[str]]]:
    """``section -> key -> values`` (systemd allows a key several times)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_for_verify(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's rotator (verify wants it to exist)."""
    text = UNIT.read_text().replace("/opt/rotator/bin/rotator", str(Path(sys.executable).parent / "rotator"))
    unit = tmp_path / "rotator.service"
    unit.write_text(text)
    return unit


def systemd_analyze() -> str:
    """systemd-analyze if this machine has it (it does not need a running systemd)."""
    found = shutil.which("systemd-analyze")
    if not found:
        pytest.skip("systemd-analyze is not installed: only the parsing checks below ran")
    return found


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = systemd_analyze()
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit_for_verify(tmp_path))], capture_output=True, text=True, timeout=60
    )

    # verify exits 0 on an unknown key or section, with a warning: any output is a failure.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_systemd_analyze_verify_does_report_a_misspelt_directive(tmp_path):
    """The check above is not vacuous: a typo in a sandboxing key is caught."""
    analyze = systemd_analyze()
    unit = unit_for_verify(tmp_path)
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSystm=strict"))

    result = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)

    assert "Unknown key 'ProtectSystm'" in result.stderr


def test_systemd_unit_offline_security_exposure_is_low(tmp_path):
    analyze = systemd_analyze()
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(unit_for_verify(tmp_path))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    match = re.search(r"Overall exposure level for rotator\.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout[-500:] + result.stderr[-500:]
    assert float(match.group(1)) <= 2.0


def test_systemd_unit_sandboxing_and_lifecycle():
    service = unit_directives(UNIT.read_text())["Service"]

    def one(key: str) -> str:
        assert len(service.get(key, [])) == 1, f"{key}: {service.get(key)}"
        return service[key][0]

    expected_yes = [
        "NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
        "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "RestrictNamespaces",
        "RestrictSUIDSGID", "LockPersonality",
    ]  # fmt: skip
    assert {k: one(k) for k in expected_yes} == dict.fromkeys(expected_yes, "yes")
    assert one("ProtectSystem") == "strict"
    assert one("CapabilityBoundingSet") == ""
    assert set(one("RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert service["SystemCallFilter"][0] == "@system-service"
    assert one("StateDirectory") == "rotator"
    assert one("User") not in ("root", "0")
    argv = shlex.split(one("ExecStart"))
    assert argv[0].endswith("/rotator") and argv[1] == "daemon"
    assert daemon_args(argv[2:]).config == "/etc/rotator/policies.toml"
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("Restart") == "on-failure"
    assert one("KillMode") == "mixed"
    # The daemon notifies (READY=1, WATCHDOG=1 at half of WatchdogSec, rotator/runners/systemd_notify.py):
    # its watchdog thread wakes every second, so WatchdogSec must leave room for a few missed wake-ups.
    assert one("Type") == "notify"
    watchdog = one("WatchdogSec")
    assert watchdog.endswith("s") and float(watchdog[:-1]) >= 10 * WATCHDOG_EVERY
    assert one("WatchdogSignal") == "SIGKILL" and one("LimitCORE") == "0", "no core dump holding tokens"
    stop = one("TimeoutStopSec")
    assert stop.endswith("s") and float(stop[:-1]) > SHUTDOWN_TIMEOUT_S  # room for the daemon's own timeout
    # ProcSubset=pid hides /proc/sys and the boot id with it: a daemon restarted after a watchdog or OOM
    # kill then waited out lease_ttl (15 min) before it recovered the killed one's runs.
    assert one("ProtectProc") == "invisible" and "ProcSubset" not in service


def test_systemd_unit_leaves_an_invalid_policy_file_failed_and_restarts_the_rest(tmp_path):
    """An invalid policy file exits 2, which no restart fixes: Restart=on-failure alone restarted it every
    RestartSec forever. A lost journal (EXIT_JOURNAL_LOST) and a crash (1) are still restarted."""
    from rotator.runners.cli import EXIT_FAILED, EXIT_INVALID
    from rotator.runners.daemon import EXIT_JOURNAL_LOST

    service = unit_directives(UNIT.read_text())["Service"]
    prevented = {word for value in service.get("RestartPreventExitStatus", []) for word in value.split()}
    policies = tmp_path / "policies.toml"
    policies.write_text('[rotator]\njournal = "journal.db"\n\n[daemon]\nsweep_interval = "often"\n')

    proc = subprocess.run([sys.executable, "-m", "rotator.runners.daemon", "-c", str(policies)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})

    assert proc.returncode == EXIT_INVALID, proc.stderr
    assert service["Restart"] == ["on-failure"] and prevented == {str(EXIT_INVALID)}
    assert EXIT_JOURNAL_LOST != EXIT_INVALID != EXIT_FAILED
    daemon_md = " ".join((UNIT.parent / "DAEMON.md").read_text().split())
    assert f"`RestartPreventExitStatus={EXIT_INVALID}`" in daemon_md and "`systemctl restart rotator`" in daemon_md


def test_the_daemon_says_when_it_cannot_take_over_a_dead_holders_lease(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Under a sandbox that hides /proc/sys the boot id is unreadable: say so at start, with the cost."""
    import logging

    from rotator.core import engine
    from rotator.runners.daemon import Daemon

    config = tmp_path / "rotator.toml"
    config.write_text('[rotator]\njournal = "journal.db"\n')
    for readable in (True, False):
        monkeypatch.setattr(engine, "_boot_id", lambda readable=readable: "ab" * 16 if readable else "")
        caplog.clear()
        daemon = Daemon(config, serve_http=False, handle_signals=False)
        with caplog.at_level(logging.WARNING, logger="rotator"):
            daemon.start()
        daemon.shutdown()
        said = [r for r in caplog.records if "cannot read /proc/sys/kernel/random/boot_id" in r.getMessage()]
        assert bool(said) != readable, (readable, [r.getMessage() for r in caplog.records])


# == 4. Helm ==============================================================================

ALL_FEATURES: dict[str, Any] = {
    "serviceMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "networkPolicy": {
        "enabled": True,
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        "egress": [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}], "ports": [{"port": 8200, "protocol": "TCP"}]}],
    },
    "vault": {"authDelegator": True},
    "journal": {"existingSecret": "rotator-postgresql", "caSecret": "rotator-postgresql-ca"},
}
KUBE_VERSIONS = ["1.25.0", "latest"]
DEFAULT_POLICIES: str = yaml.safe_load((CHART / "values.yaml").read_text())["config"]["policies"]


def policies_with(journal_line: str | None) -> str:
    """The chart's default policy file with its ``[rotator] journal`` line replaced (None: removed)."""
    lines = [line for line in DEFAULT_POLICIES.splitlines() if not line.startswith("journal = ")]
    assert len(lines) == len(DEFAULT_POLICIES.splitlines()) - 1, "the default policy file has one journal line"
    if journal_line is not None and journal_line.startswith("rotator."):
        # a dotted key: before the first table, and no [rotator] header (TOML defines a table once)
        lines = [journal_line, *(line for line in lines if line != "[rotator]")]
    elif journal_line is not None:
        lines.insert(lines.index("[rotator]") + 1, journal_line)
    return "\n".join(lines) + "\n"


def sqlite_values(journal_line: str | None = 'journal = "/var/lib/rotator/journal.db"') -> dict[str, Any]:
    return {"journal": {"kind": "sqlite"}, "replicaCount": 1, "config": {"policies": policies_with(journal_line)}}


def policies_with_shutdown(line: str | None) -> str:
    """The chart's default policy file with its ``[daemon] shutdown_timeout`` line replaced (None: removed)."""
    lines = DEFAULT_POLICIES.splitlines()
    at = next(i for i, text in enumerate(lines) if text.startswith("shutdown_timeout = "))
    lines[at : at + 1] = [] if line is None else [line]
    return "\n".join(lines) + "\n"


#: The Secret with the PostgreSQL server's CA that docs/deploy.md's install names: the default policy file's
#: journal URL reads the CA from its mount, and the chart refuses that URL without it.
CA_SECRET = "rotator-postgresql-ca"


def with_ca(values: dict[str, Any] | None) -> dict[str, Any]:
    """``values`` plus ``journal.caSecret`` where their policy file's journal names the CA mount and they set no
    CA source: what a user installing the chart sets (the values of every test but the CA's own)."""
    values = values or {}
    journal = values.get("journal", {})
    policies = values.get("config", {}).get("policies", DEFAULT_POLICIES)
    if journal.get("caSecret") or journal.get("caConfigMap") or "/etc/postgresql-ca/" not in policies:
        return values
    return {**values, "journal": {**journal, "caSecret": CA_SECRET}}


def render(values: dict[str, Any] | None = None, *, namespace: str = "rotator", release: str = "rel",
           ca: bool = True) -> dict[str, list[dict[str, Any]]]:
    """``template file -> manifests``, rendered by Helm's own engine (``ca``: through :func:`with_ca`)."""
    helm = need_module("helm_python")
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(with_ca(values) if ca else values or {}, name=release, namespace=namespace)
    return {
        name.removeprefix("rotator/templates/"): [d for d in yaml.safe_load_all(text) if d]
        for name, text in out.items()
        if name.endswith(".yaml")
    }


NOT_ON_THE_VOLUME = "journal is not a file on the PersistentVolumeClaim mounted at /var/lib/rotator/"


def render_error(values: dict[str, Any], *, ca: bool = True) -> str:
    helm = need_module("helm_python")
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmError) as caught:
        chart.render(with_ca(values) if ca else values, name="rel", namespace="rotator")
    return str(caught.value)


def manifests(values: dict[str, Any] | None = None, *, release: str = "rel",
              ca: bool = True) -> dict[str, dict[str, Any]]:
    """``kind -> manifest`` (one of each kind in this chart)."""
    out: dict[str, dict[str, Any]] = {}
    for docs in render(values, release=release, ca=ca).values():
        for doc in docs:
            assert doc["kind"] not in out, f"two {doc['kind']}"
            out[doc["kind"]] = doc
    return out


def kube_validate(doc: dict[str, Any], version: str) -> None:
    kv = need_module("kubernetes_validate")
    kv.validate(doc, kv.latest_version() if version == "latest" else version, strict=True)


def test_helm_lint_has_no_errors():
    helm = need_module("helm_python")

    result = helm.lint(str(CHART), with_ca({}))

    assert result["errors"] == []
    assert [m for m in result["messages"] if m["severity"] > 1] == []  # 1 is INFO ("icon is recommended")


@pytest.mark.parametrize("values", [{}, ALL_FEATURES, sqlite_values()],
                         ids=["defaults", "all-features", "sqlite"])  # fmt: skip
def test_helm_rendered_manifests_are_valid_kubernetes(values):
    kv = need_module("kubernetes_validate")
    checked, crds = [], []

    for doc in (d for docs in render(values).values() for d in docs):
        for version in KUBE_VERSIONS:
            try:
                kube_validate(doc, version)
            except kv.SchemaNotFoundError:
                crds.append(doc["kind"])  # Prometheus Operator CRDs: checked by the tests below
                break
            checked.append(doc["kind"])

    assert {"Deployment", "ConfigMap", "Service", "ServiceAccount", "PodDisruptionBudget"} <= set(checked)
    assert set(crds) <= {"ServiceMonitor", "PrometheusRule"}


def test_the_kubernetes_schema_check_is_not_vacuous():
    kv = need_module("kubernetes_validate")
    deployment = manifests()["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesytem"] = True

    with pytest.raises(kv.ValidationError):
        kube_validate(deployment, "latest")


def test_helm_all_features_render_every_kind():
    kinds = set(manifests(ALL_FEATURES))

    assert kinds == {
        "ConfigMap", "Deployment", "Service", "ServiceAccount", "ClusterRoleBinding", "PodDisruptionBudget",
        "NetworkPolicy", "ServiceMonitor", "PrometheusRule",
    }  # fmt: skip


def test_helm_pod_is_hardened():
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    sc, psc = container["securityContext"], pod["securityContext"]

    assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    policies = tomllib.loads(manifests()["ConfigMap"]["data"]["policies.toml"])
    shutdown = DaemonSettings.model_validate(policies.get("daemon", {})).shutdown_timeout.total_seconds()
    assert pod["terminationGracePeriodSeconds"] > max(shutdown, SHUTDOWN_TIMEOUT_S)
    # Writable: only the emptyDir/PVC mounts the image expects (see the Dockerfile).
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/tmp", "/var/lib/rotator"}


@pytest.mark.parametrize("values", [{}, sqlite_values()], ids=["postgresql", "sqlite"])
def test_helm_tmp_is_in_memory(values):
    """A rotator killed mid-call (kill -9, the OOM killer) leaves its private influxctl config, which holds the
    token in use, in /tmp until the next call sweeps it: on a memory-backed emptyDir, never on the node's disk."""
    pod = manifests(values)["Deployment"]["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    tmp = {v["name"]: v for v in pod["volumes"]}[next(name for name, path in mounts.items() if path == "/tmp")]

    assert tmp["emptyDir"]["medium"] == "Memory"
    assert tmp["emptyDir"]["sizeLimit"], "a tmpfs without a limit may take the pod's memory"


def test_helm_probes_and_port_match_the_daemon_listen_address():
    docs = manifests()
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]

    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    args = daemon_args(container["args"])
    assert parse_listen(args.listen) == ("", port)  # every interface: the kubelet and Prometheus connect from outside
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == "metrics"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert args.config == f"{mounts['config']}/policies.toml" and "policies.toml" in docs["ConfigMap"]["data"]


def test_helm_network_policy_is_on_by_default():
    """The daemon listens on every interface of the pod with an unauthenticated endpoint (issue 11.2):
    by default nothing may connect to it (the kubelet's probes are not subject to NetworkPolicy)."""
    docs = manifests()
    policy = docs["NetworkPolicy"]
    pod_labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"] and policy["spec"]["ingress"] == []
    scraped = manifests({"networkPolicy": {"metricsFrom": ALL_FEATURES["networkPolicy"]["metricsFrom"]}})
    rule = scraped["NetworkPolicy"]["spec"]["ingress"]
    assert rule == [{"from": ALL_FEATURES["networkPolicy"]["metricsFrom"], "ports": [{"port": "metrics",
                                                                                       "protocol": "TCP"}]}]
    assert "NetworkPolicy" not in manifests({"networkPolicy": {"enabled": False}}), "it can still be turned off"


def test_helm_liveness_probe_is_the_progress_watchdog():
    """/healthz fails when the scheduler or a run stops making progress (rotator.runners.daemon's watchdog),
    so the liveness probe restarts a wedged daemon; readiness also covers the journal (a store credential
    is shown in /readyz but does not gate it: tests/runners/test_daemon_readiness.py)."""
    container = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    live = container["livenessProbe"]
    assert live["httpGet"]["path"] == "/healthz" and live["failureThreshold"] >= 2
    # A probe must outlast a busy moment of the HTTP server (its read timeout is 5 s), not a wedge.
    assert live["timeoutSeconds"] >= 2 and live["periodSeconds"] * live["failureThreshold"] >= 20


def test_helm_default_policy_file_is_valid_for_rotator(tmp_path):
    docs = manifests()
    text = docs["ConfigMap"]["data"]["policies.toml"]
    data = tomllib.loads(text)
    DaemonSettings.model_validate(data.pop("daemon"))  # [daemon] is validated by its own model

    config = parse_config(data, tmp_path / "policies.toml")

    journal = urlsplit(config.journal_url())
    assert (journal.scheme, journal.password) == ("postgresql", None)  # the password comes from PGPASSWORD
    auth = data["policy"][0]["store"][0]["auth"]
    volumes = {v["name"]: v for v in docs["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["name"]: m for m in docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    token = volumes["vault-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert auth["method"] == "kubernetes"
    assert auth["jwt_file"] == f"{mounts['vault-token']['mountPath']}/{token['path']}"
    assert token["audience"] == "vault" and token["expirationSeconds"] >= 600


def test_helm_vault_auth_without_an_audience_uses_the_standard_token():
    pod = manifests({"vault": {"kubernetesAuth": {"audience": ""}}})["Deployment"]["spec"]["template"]["spec"]

    assert pod["automountServiceAccountToken"] is True  # at the store's default jwt_file
    assert "vault-token" not in {v["name"] for v in pod["volumes"]}


def test_helm_postgresql_password_comes_from_a_secret():
    container = manifests({"journal": {"existingSecret": "pg", "passwordKey": "pw"}})["Deployment"]["spec"][
        "template"]["spec"]["containers"][0]  # fmt: skip
    env = {e["name"]: e for e in container["env"]}
    assert env["PGPASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "pg", "key": "pw"}}
    assert "value" not in env["PGPASSWORD"]

    container = manifests({"journal": {"existingSecret": "pg", "envFromSecret": True}})["Deployment"]["spec"][
        "template"]["spec"]["containers"][0]  # fmt: skip
    assert container["envFrom"] == [{"secretRef": {"name": "pg"}}]
    assert "env" not in container  # PGPASSWORD, if any, is one of the Secret's keys

    container = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert "env" not in container and "envFrom" not in container


def test_helm_sqlite_journal_is_one_replica_on_a_volume():
    docs = manifests(sqlite_values())
    spec = docs["Deployment"]["spec"]
    state = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}["state"]

    assert spec["strategy"] == {"type": "Recreate"}
    assert state["persistentVolumeClaim"]["claimName"] == docs["PersistentVolumeClaim"]["metadata"]["name"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"journal": {"kind": "sqlite"}, "replicaCount": 2}, "journal.kind=sqlite allows exactly 1 replica"),
        ({"config": {"policies": '[rotator]\njournal = "/var/lib/rotator/j.db"\n[daemon]\nlisten = ":9464"\n'}},
         "no [rotator] journal = \"postgresql://...\""),
        ({"replicaCount": 0}, "minimum: got 0, want 1"),
        ({"journal": {"kind": "etcd"}}, "/journal/kind"),
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
        # kind sqlite: the journal must be a file on the PersistentVolumeClaim (/var/lib/rotator)
        (sqlite_values(None), "config.policies sets no [rotator] journal"),  # default: in read-only /etc/rotator
        (sqlite_values('journal = "/tmp/journal.db"'), NOT_ON_THE_VOLUME),  # gone with the pod
        (sqlite_values('journal = "journal.db"'), NOT_ON_THE_VOLUME),  # relative: next to the policy file
        (sqlite_values('journal = "sqlite:///tmp/journal.db"'), NOT_ON_THE_VOLUME),
        (sqlite_values('journal = "/var/lib/rotator/../../tmp/journal.db"'), NOT_ON_THE_VOLUME),
        (sqlite_values('journal = "/var/lib/rotatorx/journal.db"'), NOT_ON_THE_VOLUME),
        (sqlite_values('journal = "/var/lib/rotator/"'), NOT_ON_THE_VOLUME),  # the directory itself
        (sqlite_values('journal = "postgresql://rotator@db/rotator"'), NOT_ON_THE_VOLUME),  # kind says sqlite
        # the default NetworkPolicy admits no scraper: RotatorDown would fire forever
        ({"serviceMonitor": {"enabled": True}}, "serviceMonitor.enabled=true but networkPolicy.metricsFrom is empty"),
        ({"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
          "networkPolicy": {"metricsFrom": []}},
         "Set networkPolicy.metricsFrom to the Prometheus pods, e.g. [{namespaceSelector:"),
    ],
    ids=["sqlite-replicas", "postgres-kind-sqlite-file", "zero-replicas", "kind", "typo", "sqlite-no-journal",
         "sqlite-tmp", "sqlite-relative", "sqlite-url-tmp", "sqlite-dotdot", "sqlite-sibling-dir", "sqlite-dir",
         "sqlite-kind-postgres-file", "service-monitor-without-metrics-from", "service-monitor-and-rules-blocked"],
)  # fmt: skip
def test_helm_refuses_what_cannot_work(values, message):
    assert message in render_error(values)


SHUTDOWN_TOO_LONG = "shutdown_timeout ({}s) is not at least 10 s below terminationGracePeriodSeconds ({})"


@pytest.mark.parametrize(
    ("shutdown_line", "grace", "refused_as"),
    [
        ('shutdown_timeout = "2m"', None, (120, 45)),  # the default grace: SIGKILL mid-run
        ('shutdown_timeout = "35s"', None, (35, 45)),  # 35 + 10 is not below 45
        ('shutdown_timeout = "34s"', None, None),
        (None, 30, (20, 30)),  # absent: rotator's default, 20s
        (None, 31, None),
        ("shutdown_timeout = '1h'  # a literal string, a comment with 10 s in it", 3610, (3600, 3610)),
        ('shutdown_timeout = "1h"', 3611, None),
        ('shutdown_timeout = " 1m 05s "', 75, (65, 75)),
        ('shutdown_timeout = "1m 05s"', 76, None),
        ('shutdown_timeout = "1d"', 86410, (86400, 86410)),
        ('shutdown_timeout = "1w"', 604811, None),
    ],
)  # fmt: skip
def test_helm_refuses_a_shutdown_timeout_the_grace_period_cuts_short(shutdown_line, grace, refused_as):
    """After shutdown_timeout the daemon still closes its notifier (up to 1 s) and waits for a prune (up to 5 s)
    (Daemon.shutdown): a kubelet SIGKILL before that cuts off a run it was allowed to finish or park."""
    policies = policies_with_shutdown(shutdown_line)
    values: dict[str, Any] = {"config": {"policies": policies}}
    if grace is not None:
        values["terminationGracePeriodSeconds"] = grace
    # what rotator itself reads there (the chart's pattern must agree with it)
    shutdown = DaemonSettings.model_validate(tomllib.loads(policies)["daemon"]).shutdown_timeout.total_seconds()

    if refused_as is None:
        assert shutdown + 10 < (grace or 45)
        assert manifests(values)["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == (
            grace or 45)
    else:
        assert (shutdown, grace or 45) == refused_as and shutdown + 10 >= refused_as[1]
        message = render_error(values)
        assert SHUTDOWN_TOO_LONG.format(*refused_as) in message
        assert "Raise terminationGracePeriodSeconds" in message and "lower shutdown_timeout" in message


@pytest.mark.parametrize(
    "shutdown_line",
    ["shutdown_timeout = 120", 'shutdown_timeout = """2m"""', 'shutdown_timeout = "2 minutes"', None],
    ids=["number", "multi-line-string", "words", "inline-table"],
)  # fmt: skip
def test_helm_refuses_a_shutdown_timeout_it_cannot_read(shutdown_line):
    """Not taken for the default: a value the pattern cannot read may well be a long one."""
    if shutdown_line is None:  # before the first table, instead of [daemon]
        policies = 'daemon = { shutdown_timeout = "2m" }\n' + policies_with_shutdown(None).replace("[daemon]\n", "")
        assert tomllib.loads(policies)["daemon"] == {"shutdown_timeout": "2m"}
    else:
        policies = policies_with_shutdown(shutdown_line)

    assert "cannot read [daemon] shutdown_timeout" in render_error({"config": {"policies": policies}})


def test_helm_reads_the_dotted_shutdown_timeout_key():
    policies = policies_with_shutdown(None).replace("[daemon]\n", "")
    policies = 'daemon.shutdown_timeout = "2m"\n' + policies
    assert tomllib.loads(policies)["daemon"]["shutdown_timeout"] == "2m"

    assert SHUTDOWN_TOO_LONG.format(120, 45) in render_error({"config": {"policies": policies}})
    assert "Deployment" in manifests({"config": {"policies": policies}, "terminationGracePeriodSeconds": 131})


CA_NOT_MOUNTED = "journal names the CA at /etc/postgresql-ca/, but neither journal.caSecret nor journal.caConfigMap"


@pytest.mark.parametrize(
    "values",
    [{}, {"journal": {"caSecret": "", "caConfigMap": ""}},
     {"config": {"policies": policies_with("journal = 'postgresql://rotator@db/rotator?sslrootcert=/etc/postgresql-ca/"
                                           "ca.crt&sslmode=verify-full'")}}],
    ids=["defaults", "empty", "literal-string"],
)  # fmt: skip
def test_helm_refuses_a_journal_ca_it_does_not_mount(values):
    """Nothing is mounted at /etc/postgresql-ca without a CA source: libpq cannot open the root certificate
    and every replica fails at start. The chart's own defaults name it, so they need one (docs/deploy.md)."""
    message = render_error(values, ca=False)

    assert CA_NOT_MOUNTED in message and "Set journal.caSecret (or journal.caConfigMap)" in message


@pytest.mark.parametrize(
    ("journal", "volume"),
    [({"caSecret": "pg-ca"}, {"secret": {"secretName": "pg-ca"}}),
     ({"caConfigMap": "pg-ca"}, {"configMap": {"name": "pg-ca"}})],
    ids=["secret", "config-map"],
)  # fmt: skip
def test_helm_mounts_the_journal_ca_the_url_names(journal, volume):
    pod = manifests({"journal": journal}, ca=False)["Deployment"]["spec"]["template"]["spec"]
    url = urlsplit(tomllib.loads(DEFAULT_POLICIES)["rotator"]["journal"])
    root_cert = dict(parse_qsl(url.query))["sslrootcert"]

    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "postgresql-ca")
    assert root_cert == f"{mount['mountPath']}/ca.crt" and mount["readOnly"] is True
    assert {v["name"]: v for v in pod["volumes"]}["postgresql-ca"] == {"name": "postgresql-ca", **volume}


def test_helm_needs_no_ca_source_for_a_journal_that_names_none():
    """The refusal is about the mount the URL reads, not a rule that every journal has a CA."""
    for journal_line in ('journal = "postgresql://rotator@db/rotator?sslmode=verify-full&sslrootcert=/etc/pki/ca.crt"',
                         'journal = "postgresql://"'):
        pod = manifests({"config": {"policies": policies_with(journal_line)}}, ca=False)["Deployment"]["spec"][
            "template"]["spec"]  # fmt: skip
        assert "postgresql-ca" not in {v["name"] for v in pod["volumes"]}, journal_line


def journal_under_the_volume(policies: str) -> bool:
    """Where rotator itself would put this policy file's journal, mounted at /etc/rotator/policies.toml."""
    from rotator.core.journal import sqlite_path

    journal = tomllib.loads(policies)["rotator"].get("journal", "rotator-journal.db")
    path = sqlite_path(journal) or os.path.join("/etc/rotator", journal)
    return os.path.normpath(path).startswith("/var/lib/rotator/")


def documented_sqlite_journal_lines() -> list[str]:
    """Every `journal = "/var/lib/rotator/..."` the chart's values and docs/deploy.md tell a user to write."""
    texts = (CHART / "values.yaml").read_text() + (ROOT / "docs" / "deploy.md").read_text()
    found = sorted(set(re.findall(r'journal = "/var/lib/rotator/[^"]+"', texts)))
    assert found, "the docs show the SQLite journal line"
    return found


@pytest.mark.parametrize(
    "journal_line",
    [*documented_sqlite_journal_lines(), "journal = 'sqlite:///var/lib/rotator/journal.db'  # literal string",
     'rotator.journal = "sqlite:////var/lib/rotator/state/journal.db"'],
)  # fmt: skip
def test_helm_renders_a_sqlite_journal_on_the_volume(journal_line):
    values = sqlite_values(journal_line)

    docs = manifests(values)

    assert journal_under_the_volume(values["config"]["policies"])
    mounts = {m["name"]: m["mountPath"] for m in docs["Deployment"]["spec"]["template"]["spec"]["containers"][0][
        "volumeMounts"]}  # fmt: skip
    assert mounts["state"] == "/var/lib/rotator" and "PersistentVolumeClaim" in docs


def test_helm_sqlite_refusals_are_journals_rotator_would_put_off_the_volume():
    """The refused files above do mean a journal off the volume to rotator itself (not a pattern's quirk)."""
    for journal_line in (None, 'journal = "/tmp/journal.db"', 'journal = "journal.db"',
                         'journal = "sqlite:///tmp/journal.db"', 'journal = "/var/lib/rotator/../../tmp/journal.db"'):
        assert not journal_under_the_volume(policies_with(journal_line)), journal_line


def test_helm_sqlite_journal_is_not_checked_in_an_existing_config_map():
    """The chart cannot see that file (docs/deploy.md: these checks are yours)."""
    values = {"journal": {"kind": "sqlite"}, "replicaCount": 1, "config": {"existingConfigMap": "mine"}}

    assert "PersistentVolumeClaim" in manifests(values)


@pytest.mark.parametrize(
    "policies",
    [policies_with("journal = 'postgresql://rotator@db/rotator'"),  # a TOML literal string
     policies_with('rotator.journal = "postgresql://rotator@db/rotator"')],  # a dotted key
    ids=["literal-string", "dotted-key"],
)  # fmt: skip
def test_helm_postgresql_journal_in_any_toml_spelling_renders(policies):
    assert tomllib.loads(policies)["rotator"]["journal"] == "postgresql://rotator@db/rotator"

    assert "Deployment" in manifests({"config": {"policies": policies}})


def test_helm_service_monitor_is_refused_only_where_the_network_policy_blocks_it():
    """The refusal above is not broader than the problem: the scraper admitted, or no NetworkPolicy, renders;
    the alerts alone (scraped some way the chart cannot see) render too."""
    metrics_from = ALL_FEATURES["networkPolicy"]["metricsFrom"]

    assert "ServiceMonitor" in manifests({"serviceMonitor": {"enabled": True},
                                          "networkPolicy": {"metricsFrom": metrics_from}})  # fmt: skip
    assert "NetworkPolicy" not in manifests({"serviceMonitor": {"enabled": True}, "networkPolicy": {"enabled": False}})
    assert "PrometheusRule" in manifests({"prometheusRule": {"enabled": True}})
    # (another NetworkPolicy of the namespace admits the scraper: policies add up, the chart cannot see it)
    assert "ServiceMonitor" in manifests({"serviceMonitor": {"enabled": True},
                                          "networkPolicy": {"metricsAllowedElsewhere": True}})  # fmt: skip


def test_helm_service_monitor_scrapes_the_service():
    docs = manifests(ALL_FEATURES)
    monitor, service = docs["ServiceMonitor"], docs["Service"]

    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def exported_metric_names() -> set[str]:
    """Every series name rotator/observe/metrics.py exports, from a real scrape of its registry."""
    from prometheus_client import generate_latest

    from rotator.observe.metrics import CredentialState, LiveSnapshot, Metrics, PolicyState, StateSnapshot

    metrics = Metrics()
    state = PolicyState(
        policy="p", enabled=True, rotated_at=NOW, expires_at=NOW, next_rotation=NOW, pending_revocations=1,
        overdue_revocations=1, failed_revocations=0, open_runs=0, needs_attention=False, lease_active=False,
        lease_held_here=False, max_age_s=86400.0, compliant=True,
    )  # fmt: skip
    metrics.watch_state(lambda: StateSnapshot(now=NOW, journal_up=True, policies=[state]))
    credential = CredentialState(policy="p", store="vault", ok=True, failures=0, expires_at=NOW)
    metrics.watch_live(lambda: LiveSnapshot(stalled=False, last_progress=0.0, credentials=[credential]))
    from rotator.observe.inventory import Entry, Inventory

    metrics.inventory(Inventory(targets=["influxdb3:p"], entries=[
        Entry("influxdb3:p", "influxdb3", "t1", "", "active", "unmanaged", ("no-expiry",), "no tag")]))
    metrics.rotations.labels("p", "failure").inc()
    metrics.revocations.labels("p", "failed").inc()
    metrics.consecutive_failures.labels("p").set(1)
    metrics.orphans.labels("p").inc()
    metrics.reload_ok.set(1)
    metrics.clock_offset(-0.004)  # a PostgreSQL journal's (none with SQLite)
    metrics.notification("webhook", "failed")
    text = generate_latest(metrics.registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def prometheus_rules() -> dict[str, Any]:
    return manifests(ALL_FEATURES)["PrometheusRule"]["spec"]


def test_prometheus_rules_use_only_metrics_rotator_exports():
    exported = exported_metric_names()
    used = {
        name for rule in prometheus_rules()["groups"][0]["rules"] for name in re.findall(r"\brotator_\w+", rule["expr"])
    }

    assert used, "no rotator metric in the alerts"
    assert used <= exported, f"not exported by rotator/observe/metrics.py: {sorted(used - exported)}"
    alerts = {rule["alert"] for rule in prometheus_rules()["groups"][0]["rules"]}
    assert {"RotatorRotationFailing", "RotatorTokenTooOld", "RotatorRevocationOverdue"} <= alerts


def test_deploy_docs_list_every_alert_the_chart_ships():
    """docs/deploy.md said the chart "adds these alerts" and listed 9 of its 14."""
    shipped = {rule["alert"] for rule in prometheus_rules()["groups"][0]["rules"]}
    docs = (ROOT / "docs" / "deploy.md").read_text()
    section = docs[docs.index("### Monitoring: ServiceMonitor and alerts"):docs.index("### Render-time refusals")]

    assert set(re.findall(r"^\| (Rotator\w+) \|", section, re.MULTILINE)) == shipped
    # RotatorDown's job is the chart's full name (the Service's, which the ServiceMonitor's scrapes carry):
    # it said `<release>-rotator`, i.e. `rotator-rotator` for the documented `helm install rotator ...`.
    row = next(line for line in section.splitlines() if line.startswith("| RotatorDown |"))
    assert 'absent(up{job="<fullname>"} == 1)' in row, row
    examples = dict(re.findall(r'`helm install (\S+) \.\.\.` gives `job="([^"]+)"`', section))
    install = re.search(r"^helm install (\S+) deploy/helm/rotator ", docs, re.MULTILINE)
    assert install and install[1] in examples, "the documented release's job is shown"
    assert any("rotator" not in release for release in examples), "a release name without rotator is shown"
    for release, job in examples.items():
        docs_of = manifests(ALL_FEATURES, release=release)
        down = next(rule for rule in docs_of["PrometheusRule"]["spec"]["groups"][0]["rules"]
                    if rule["alert"] == "RotatorDown")  # fmt: skip
        rendered = re.fullmatch(r'absent\(up\{job="([^"]+)", namespace="[^"]+"\} == 1\)', down["expr"].strip())
        assert rendered, down["expr"]
        assert (release, rendered[1]) == (release, job)
        assert docs_of["Service"]["metadata"]["name"] == job, "the ServiceMonitor's job is the Service's name"


PROMTOOL_DIR = "/opt/prometheus-tools/usr/bin"
PROMTOOL_HINT = (
    "promtool is part of Prometheus, not of the dev extras; on Debian unpack it without installing the "
    f"service: apt-get download prometheus && dpkg-deb -x prometheus_*.deb /opt/prometheus-tools (looked on "
    f"PATH and in {PROMTOOL_DIR}). .ci/run does this and sets ROTATOR_REQUIRE_PROMTOOL=1"
)


def promtool() -> str:
    """promtool, or a skip that says how to get it (a failure where ROTATOR_REQUIRE_PROMTOOL=1, as in CI)."""
    found = shutil.which("promtool") or shutil.which("promtool", path=PROMTOOL_DIR)
    if found:
        return found
    if os.environ.get("ROTATOR_REQUIRE_PROMTOOL") == "1":
        pytest.fail(f"promtool is missing and ROTATOR_REQUIRE_PROMTOOL=1: {PROMTOOL_HINT}")
    pytest.skip(f"promtool not found: {PROMTOOL_HINT}")


def test_prometheus_rules_pass_promtool_check(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(prometheus_rules()))

    result = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 20 rules found" in result.stdout


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    text = ", ".join(f'{k}="{v}"' for k, v in {"namespace": "rotator", **labels}.items())
    return {"series": f"{name}{{{text}}}", "values": values}


#: rotator_tokens{issuer}: a cluster or instance as rotator/observe/inventory.py's Target.label writes it
CLUSTER = "influxctl-management|profile='clustered/cluster.example.com/443//'"
INSTANCE = "influxdb3|base_url='https://influxdb3.example.com:8181'"


def test_prometheus_alerts_fire_on_the_conditions_they_name(tmp_path):
    """promtool's rule unit tests: synthetic series named as rotator exports them, two replicas."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(prometheus_rules()))
    a, b = {"pod": "rel-rotator-a"}, {"pod": "rel-rotator-b"}
    series = [
        # p1 fails on both replicas (never 3 in a row on one), never succeeds: ~12 failures an hour.
        _series("rotator_consecutive_failures", "0 0 1x88", policy="p1", **a),
        _series("rotator_consecutive_failures", "0 0 0 2x87", policy="p1", **b),
        _series("rotator_rotations_total", "0+0.1x90", policy="p1", result="failure", **a),
        _series("rotator_rotations_total", "0+0.1x90", policy="p1", result="failure", **b),
        # p2 is fine: it rotates, its next rotation is ahead, nothing overdue.
        _series("rotator_rotations_total", "0+0.01x90", policy="p2", result="success", **a),
        _series("rotator_next_rotation_timestamp_seconds", "100000x90", policy="p2", **a),
        _series("rotator_token_expiry_timestamp_seconds", "1000000x90", policy="p2", **a),
        _series("rotator_revocations_overdue", "0x90", policy="p2", **a),
        # p4 fails now and then but also succeeds: not "failing".
        _series("rotator_rotations_total", "0+0.1x90", policy="p4", result="failure", **a),
        _series("rotator_rotations_total", "0+0.1x90", policy="p4", result="success", **b),
        # p3: due at t=0 and not rotated; its token expires at 2h; one revocation overdue.
        _series("rotator_next_rotation_timestamp_seconds", "0x90", policy="p3", **a),
        _series("rotator_next_rotation_timestamp_seconds", "0x90", policy="p3", **b),
        _series("rotator_token_expiry_timestamp_seconds", "7200x90", policy="p3", **a),
        _series("rotator_revocations_overdue", "1x90", policy="p3", **a),
        _series("rotator_revocations_overdue", "1x90", policy="p3", **b),
        _series("up", "1x90", job="rel-rotator", **a),
        # Replica b is wedged from 30m on; p3's Vault token cannot be renewed from 40m on.
        _series("rotator_watchdog_stalled", "0x30 1x60", **b),
        _series("rotator_watchdog_stalled", "0x90", **a),
        _series("rotator_credential_ok", "1x40 0x50", policy="p3", store="vault", **a),
        _series("rotator_credential_ok", "1x90", policy="p2", store="vault", **a),
        # Compliance: p3's token is too old on both replicas' view; p2 is compliant.
        _series("rotator_policy_compliant", "0x90", policy="p3", **a),
        _series("rotator_policy_compliant", "0x90", policy="p3", **b),
        _series("rotator_policy_compliant", "1x90", policy="p2", **a),
        # Inventory: two orphans and an unmanaged never-expiring token on one issuer; the other is clean.
        _series("rotator_tokens", "2x90", issuer=CLUSTER, **{"class": "orphan"}, **a),
        _series("rotator_tokens", "3x90", issuer=CLUSTER, **{"class": "unmanaged"}, **a),
        _series("rotator_tokens_flagged", "1x90", issuer=CLUSTER, flag="no-expiry",
                **{"class": "unmanaged"}, **a),
        _series("rotator_tokens_flagged", "4x90", issuer=CLUSTER, flag="no-expiry",
                **{"class": "managed"}, **a),
        _series("rotator_tokens", "0x90", issuer=INSTANCE, **{"class": "orphan"}, **a),
        _series("rotator_tokens", "1x90", issuer=INSTANCE, **{"class": "managed"}, **a),
        # Replica b cannot list the instance from 20m on (no rotator_tokens series of it there); a lists both.
        _series("rotator_inventory_issuer_errors", "0x90", issuer=CLUSTER, **a),
        _series("rotator_inventory_issuer_errors", "0x90", issuer=INSTANCE, **a),
        _series("rotator_inventory_issuer_errors", "0x20 1x70", issuer=INSTANCE, **b),
        # The inventory finishes every minute on a; b's stopped at 10m, but a's is recent: not stale.
        _series("rotator_inventory_last_run_timestamp_seconds", "0+60x90", **a),
        _series("rotator_inventory_last_run_timestamp_seconds", "0+60x10 600x80", **b),
        # Replica a's journal holds the work of one policy left out of the file (b's sweep has not run yet).
        _series("rotator_removed_policies_with_work", "1x90", **a),
        _series("rotator_removed_policies_with_work", "0x90", **b),
        # Webhooks failing on one replica (a failure every 10 minutes); hooks fine.
        _series("rotator_notifications_total", "0+0.1x90", channel="webhook", result="failed", **a),
        _series("rotator_notifications_total", "0+1x90", channel="hook", result="ok", **a),
        # RotatorStuckRun: p5's run is unfinished and nobody holds its lease (no daemon recovers it). p6's
        # is running on a (its lease held there; b's view of the lease is older). p7's run was interrupted
        # only 20 minutes ago, under the alert's 30m. p2 has no open run.
        *(_series("rotator_open_runs", "1x90", policy="p5", **pod) for pod in (a, b)),
        *(_series("rotator_lease_active", "0x90", policy="p5", **pod) for pod in (a, b)),
        *(_series("rotator_open_runs", "1x90", policy="p6", **pod) for pod in (a, b)),
        _series("rotator_lease_active", "1x90", policy="p6", **a),
        _series("rotator_lease_active", "0x90", policy="p6", **b),
        _series("rotator_open_runs", "0x60 1x30", policy="p7", **a),
        _series("rotator_lease_active", "1x60 0x30", policy="p7", **a),
        _series("rotator_open_runs", "0x90", policy="p2", **a),
        _series("rotator_lease_active", "0x90", policy="p2", **a),
        # RotatorClockSkew: b's clock runs 1.5 s ahead of the journal server's from 60m on; a's is 0.3 s off.
        _series("rotator_clock_offset_seconds", "0.3x90", **a),
        _series("rotator_clock_offset_seconds", "-0.01x60 -1.5x30", **b),
    ]
    expected = {
        "RotatorRotationFailing": [{"policy": "p1", "severity": "warning"}],
        "RotatorTokenTooOld": [{"policy": "p3", "severity": "warning"}],
        "RotatorTokenExpiringSoon": [{"policy": "p3", "severity": "critical"}],
        "RotatorRevocationOverdue": [{"policy": "p3", "severity": "warning"}],
        "RotatorRevocationFailed": [],
        "RotatorNeedsAttention": [],
        "RotatorDown": [],
        "RotatorWedged": [{"pod": "rel-rotator-b", "severity": "critical"}],
        "RotatorStoreCredentialExpiring": [{"policy": "p3", "store": "vault", "severity": "warning"}],
        "RotatorPolicyOutOfCompliance": [{"policy": "p3", "severity": "warning"}],
        "RotatorOrphanTokens": [{"issuer": CLUSTER, "severity": "warning"}],
        "RotatorUnmanagedTokenWithoutExpiry": [{"issuer": CLUSTER, "severity": "info"}],
        "RotatorInventoryFailing": [{"issuer": INSTANCE, "severity": "warning"}],
        "RotatorInventoryStale": [],
        "RotatorRemovedPolicyWork": [{"severity": "warning"}],
        "RotatorNotificationsFailing": [{"channel": "webhook", "severity": "warning"}],
        "RotatorStuckRun": [{"policy": "p5", "severity": "warning"}],
        "RotatorClockSkew": [{"pod": "rel-rotator-b", "severity": "warning"}],
    }
    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": "80m",
                        "alertname": name,
                        "exp_alerts": [{"exp_labels": {"namespace": "rotator", **labels}} for labels in alerts],
                    }
                    for name, alerts in expected.items()
                ],
            },
            {   # inventories stopped two days ago on both replicas (one never ran one: 0, left out)
                "interval": "1m",
                "input_series": [_series("rotator_inventory_last_run_timestamp_seconds", "3600x3100", **a),
                                 _series("rotator_inventory_last_run_timestamp_seconds", "0x3100", **b)],
                "alert_rule_test": [
                    {"eval_time": "49h", "alertname": "RotatorInventoryStale", "exp_alerts": []},
                    {"eval_time": "51h", "alertname": "RotatorInventoryStale",
                     "exp_alerts": [{"exp_labels": {"namespace": "rotator", "severity": "warning"}}]},
                ],
            },
            {   # RotatorClockSkew: a's clock off by 5 s for 9 minutes only (NTP stepped it back); b's 0.9 s
                # for good (under 1 s); c's 1.5 s behind from 5m on, firing once that lasted 10 minutes
                "interval": "1m",
                "input_series": [_series("rotator_clock_offset_seconds", "0x10 -5x9 0x30", **a),
                                 _series("rotator_clock_offset_seconds", "0.9x50", **b),
                                 _series("rotator_clock_offset_seconds", "0x5 1.5x45", pod="rel-rotator-c")],
                "alert_rule_test": [
                    {"eval_time": "14m", "alertname": "RotatorClockSkew", "exp_alerts": []},
                    {"eval_time": "25m", "alertname": "RotatorClockSkew",
                     "exp_alerts": [{"exp_labels": {"namespace": "rotator", "pod": "rel-rotator-c",
                                                    "severity": "warning"}}]},
                    {"eval_time": "40m", "alertname": "RotatorClockSkew",
                     "exp_alerts": [{"exp_labels": {"namespace": "rotator", "pod": "rel-rotator-c",
                                                    "severity": "warning"}}]},
                ],
            },
            {   # nothing scraped at all: RotatorDown
                "interval": "1m",
                "input_series": [_series("up", "0x30", job="rel-rotator", **a)],
                "alert_rule_test": [{"eval_time": "20m", "alertname": "RotatorDown", "exp_alerts": [{"exp_labels": {"severity": "critical"}}]}],  # noqa: E501
            },
        ],
    }  # fmt: skip
    # promtool compares annotations too: fill in the ones these alerts render.
    annotations = {r["alert"]: r["annotations"] for r in prometheus_rules()["groups"][0]["rules"]}
    values = {"RotatorTokenTooOld": "1h 20m 0s", "RotatorTokenExpiringSoon": "40m 0s", "RotatorRevocationOverdue": "1",
              "RotatorOrphanTokens": "2", "RotatorUnmanagedTokenWithoutExpiry": "1",
              "RotatorInventoryStale": "2d 2h 0m 0s", "RotatorRemovedPolicyWork": "1", "RotatorClockSkew": "1.5"}
    for test in tests["tests"]:
        for case in test["alert_rule_test"]:
            for alert in case["exp_alerts"]:
                policy = alert["exp_labels"].get("policy", "")
                alert["exp_annotations"] = {
                    k: v.replace("{{ $labels.policy }}", policy)
                    .replace("{{ $labels.pod }}", alert["exp_labels"].get("pod", ""))
                    .replace("{{ $labels.store }}", alert["exp_labels"].get("store", ""))
                    .replace("{{ $labels.issuer }}", alert["exp_labels"].get("issuer", ""))
                    .replace("{{ $labels.channel }}", alert["exp_labels"].get("channel", ""))
                    .replace("{{ $value | humanizeDuration }}", values.get(case["alertname"], ""))
                    .replace("{{ $value }}", values.get(case["alertname"], ""))
                    for k, v in annotations[case["alertname"]].items()
                }
    test_file = tmp_path / "tests.yaml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))

    result = subprocess.run([promtool(), "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr


def test_counter_alerts_see_the_first_increment_of_series_that_start_at_zero(tmp_path):
    """rotator_rotations_total, rotator_orphans_total and rotator_notifications_total are exported at 0
    from the load (rotator/observe/metrics.py, PolicyCounter), as here. Created at their first inc()
    they appeared at 1, and increase() of such a series is 0: a process's first orphan or failed
    delivery raised nothing, a policy's first success did not end RotatorRotationFailing, and one
    failure on each of three replicas did not add up to three."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(prometheus_rules()))
    a, b, c = ({"pod": f"rel-rotator-{x}"} for x in "abc")
    series = [
        _series("up", "1x90", job="rel-rotator", **a),
        # p-orphan's first orphan, and the webhook's first failed delivery, at 20m.
        _series("rotator_orphans_total", "0x20 1x70", policy="p-orphan", **a),
        _series("rotator_notifications_total", "0x20 1x70", channel="webhook", result="failed", **a),
        _series("rotator_notifications_total", "0x90", channel="hook", result="failed", **a),
        # p-recovered fails every minute for 20m (in a row), then its first success at 31m.
        _series("rotator_rotations_total", "0 1+1x19 20x70", policy="p-recovered", result="failure", **a),
        _series("rotator_rotations_total", "0x30 1x60", policy="p-recovered", result="success", **a),
        _series("rotator_consecutive_failures", "0 1+1x19 20x9 0x60", policy="p-recovered", **a),
        # p-spread fails once on each of three replicas at 31m (never twice in a row on one), never succeeds.
        *(_series("rotator_rotations_total", "0x30 1x60", policy="p-spread", result="failure", **pod)
          for pod in (a, b, c)),
        *(_series("rotator_rotations_total", "0x90", policy="p-spread", result="success", **pod) for pod in (a, b, c)),
        *(_series("rotator_consecutive_failures", "0x30 1x60", policy="p-spread", **pod) for pod in (a, b, c)),
    ]
    cases = [  # (eval_time, alert, the labels of each alert expected)
        ("15m", "RotatorRevocationFailed", []),
        ("25m", "RotatorRevocationFailed", [{"policy": "p-orphan", "severity": "critical"}]),
        ("15m", "RotatorNotificationsFailing", []),
        ("40m", "RotatorNotificationsFailing", [{"channel": "webhook", "severity": "warning"}]),
        ("25m", "RotatorRotationFailing", [{"policy": "p-recovered", "severity": "warning"}]),
        ("60m", "RotatorRotationFailing", [{"policy": "p-spread", "severity": "warning"}]),
    ]
    annotations = {r["alert"]: r["annotations"] for r in prometheus_rules()["groups"][0]["rules"]}
    tests = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "alert_rule_test": [
            {"eval_time": at, "alertname": name, "exp_alerts": [
                {"exp_labels": {"namespace": "rotator", **labels},
                 "exp_annotations": {k: v.replace("{{ $labels.policy }}", labels.get("policy", ""))
                                     .replace("{{ $labels.channel }}", labels.get("channel", ""))
                                     for k, v in annotations[name].items()}}
                for labels in expected]}
            for at, name, expected in cases],
    }]}  # fmt: skip
    test_file = tmp_path / "tests.yaml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))

    result = subprocess.run([promtool(), "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr


def _humanize_duration(seconds: int) -> str:
    """Prometheus' humanizeDuration of a whole number of seconds (60 s or more)."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m {secs}s"
    return f"{hours}h {minutes}m {secs}s" if hours else f"{minutes}m {secs}s"


def test_token_expiring_soon_fires_only_when_the_rotation_is_too_late_for_the_policy(tmp_path):
    """RotatorTokenExpiringSoon (critical) fired whenever the token had less than expiryWarningSeconds
    (2 d) left. When a rotation is due the token has grace + margin left, 2 d by default: a default
    policy rotating minutes late, or any policy with grace + margin under 2 d (every cycle, before the
    rotation was even due), raised it. Now it needs less than half of that slack left too."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(prometheus_rules()))
    day, hour, now = 86400, 3600, 3600  # evaluated at 60m; the gauges are Unix times around it
    # policy -> (expiry, next rotation or None: a disabled policy), as one replica exports them
    cases: dict[str, tuple[int, int | None]] = {
        "grace-12h-6h-before-due": (now + 6 * hour + 36 * hour, now + 6 * hour),  # slack 1d12h
        "defaults-10m-late": (now - 600 + 2 * day, now - 600),
        "defaults-23h-late": (now - 23 * hour + 2 * day, now - 23 * hour),
        "defaults-25h-late": (now - 25 * hour + 2 * day, now - 25 * hour),
        "grace-30d-10d-late": (now - 10 * day + 31 * day, now - 10 * day),
        "grace-30d-29d12h-late": (now - 29 * day - 12 * hour + 31 * day, now - 29 * day - 12 * hour),
        "expires-before-its-rotation": (now + day, now + 10 * day),
        "disabled-1d-left": (now + day, None),
        "disabled-3d-left": (now + 3 * day, None),
    }
    firing = {"defaults-25h-late": 23 * hour, "grace-30d-29d12h-late": 36 * hour,
              "expires-before-its-rotation": day, "disabled-1d-left": day}
    a, b = {"pod": "rel-rotator-a"}, {"pod": "rel-rotator-b"}
    series = []
    for policy, (expiry, due) in cases.items():
        series.append(_series("rotator_token_expiry_timestamp_seconds", f"{expiry}x70", policy=policy, **a))
        if due is not None:
            series.append(_series("rotator_next_rotation_timestamp_seconds", f"{due}x70", policy=policy, **a))
    # Grace 12h, rotated on time a minute ago: replica b's view has the new token, a's (until its
    # next sweep) the previous one. Neither view is late; the previous token's expiry set against the
    # new rotation's due time (aggregating before comparing) would be a token that expires before
    # its rotation.
    previous_due, new_due, slack = now - 60, now - 60 + 30 * day, 36 * hour
    series += [
        _series("rotator_token_expiry_timestamp_seconds", f"{previous_due + slack}x70", policy="replicas", **a),
        _series("rotator_next_rotation_timestamp_seconds", f"{previous_due}x70", policy="replicas", **a),
        _series("rotator_token_expiry_timestamp_seconds", f"{new_due + slack}x70", policy="replicas", **b),
        _series("rotator_next_rotation_timestamp_seconds", f"{new_due}x70", policy="replicas", **b),
    ]
    annotations = next(r["annotations"] for r in prometheus_rules()["groups"][0]["rules"]
                       if r["alert"] == "RotatorTokenExpiringSoon")
    expected = [
        {"exp_labels": {"namespace": "rotator", "policy": policy, "severity": "critical"},
         "exp_annotations": {k: v.replace("{{ $labels.policy }}", policy)
                             .replace("{{ $value | humanizeDuration }}", _humanize_duration(left))
                             for k, v in annotations.items()}}
        for policy, left in firing.items()
    ]
    tests = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "alert_rule_test": [{"eval_time": "60m", "alertname": "RotatorTokenExpiringSoon", "exp_alerts": expected}],
    }]}
    test_file = tmp_path / "tests.yaml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))

    result = subprocess.run([promtool(), "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr


# == 5. Dockerfile ========================================================================


def dockerfile() -> Any:
    parse = need_module("dockerfile_parse")
    return parse.DockerfileParser(path=str(DOCKERFILE))


def final_stage(parser: Any) -> list[dict[str, Any]]:
    instructions = [i for i in parser.structure if i["instruction"] != "COMMENT"]
    last_from = max(n for n, i in enumerate(instructions) if i["instruction"] == "FROM")
    return instructions[last_from:]


def test_dockerfile_runs_rotator_daemon_as_a_non_root_user():
    stage = final_stage(dockerfile())
    last = {i["instruction"]: i["value"] for i in stage}  # the last of each instruction wins

    user = last["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0, "a numeric non-root USER (Kubernetes checks runAsNonRoot with it)"
    assert json.loads(last["ENTRYPOINT"]) == ["/usr/bin/tini", "--", "rotator", "daemon"]
    args = daemon_args(json.loads(last["CMD"]))
    assert (args.config, args.listen) == ("/etc/rotator/policies.toml", None)  # [daemon] listen applies
    assert last["EXPOSE"] == str(parse_listen(DaemonSettings().listen)[1])
    assert "/var/lib/rotator" in last["WORKDIR"]


NO_JOURNAL_POLICY = """[daemon]
listen = "127.0.0.1:0"

[[policy]]
name = "p"
schedule = "30d"
grace = "2d"

[policy.issuer]
type = "influxctl-management"

[policy.issuer.profile]
product = "clustered"
host = "cluster.test.invalid"

[[policy.store]]
type = "vault-kv2"
url = "http://127.0.0.1:1"
path = "x/p"

[policy.store.auth]
method = "token"
token = { file = "vault-token" }
"""


def test_docs_say_how_the_daemon_exits_with_its_default_journal_in_a_read_only_directory(tmp_path):
    """docs/deploy.md: a policy file without `journal` in the image's read-only /etc/rotator. As root the
    directory is bind-mounted read-only in a mount namespace of its own (EROFS, as in the container);
    otherwise it is mode 0555 (EACCES: the same error path)."""
    said = re.search(r"read-only\s+`/etc/rotator`, and the daemon would exit (\d+) at every restart",
                      (ROOT / "docs" / "deploy.md").read_text())
    assert said, "docs/deploy.md says how the daemon exits"
    etc, mounted = tmp_path / "etc", tmp_path / "ro"
    etc.mkdir()
    mounted.mkdir()
    (etc / "policies.toml").write_text(NO_JOURNAL_POLICY)
    (etc / "vault-token").write_text("not-a-real-token\n")
    daemon = [sys.executable, "-m", "rotator.runners.daemon", "-c", str(mounted / "policies.toml")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if os.geteuid() == 0:
        unshare = shutil.which("unshare")
        probe = [unshare or "unshare", "-m", "--propagation", "private", "sh", "-c",
                 'mount --bind -o ro "$1" "$2" && ! touch "$2/probe" 2>/dev/null', "sh", str(etc), str(mounted)]
        if unshare is None or subprocess.run(probe, capture_output=True, timeout=30).returncode != 0:
            pytest.skip("as root, needs unshare and mount (a mount namespace) to make a read-only directory")
        command = [*probe[:6], 'mount --bind -o ro "$1" "$2" && shift 2 && exec "$@"', "sh", str(etc), str(mounted),
                   *daemon]  # fmt: skip
    else:
        mounted.rmdir()
        mounted.symlink_to(etc)
        etc.chmod(0o555)
        command = daemon
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    finally:
        etc.chmod(0o755)

    assert "rotator-journal.db: cannot connect" in proc.stderr, proc.stderr
    assert proc.returncode == int(said[1]), proc.stderr


def test_dockerfile_healthcheck_probes_healthz():
    parser = dockerfile()
    stage = final_stage(parser)
    healthcheck = next(i["value"] for i in stage if i["instruction"] == "HEALTHCHECK")
    env = parser.envs

    assert "ROTATOR_HEALTHCHECK_URL" in healthcheck
    assert env["ROTATOR_HEALTHCHECK_URL"] == "http://127.0.0.1:9464/healthz"
    assert re.search(r"--interval=\d+s", healthcheck) and re.search(r"--timeout=\d+s", healthcheck)


def healthcheck_argv() -> list[str]:
    healthcheck = next(i["value"] for i in final_stage(dockerfile()) if i["instruction"] == "HEALTHCHECK")
    argv: list[str] = json.loads(healthcheck.split("CMD", 1)[1])
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


@pytest.fixture
def health_server() -> Iterator[dict[str, Any]]:
    state: dict[str, Any] = {"status": 200, "paths": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            state["paths"].append(self.path)
            self.send_response(state["status"])
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/healthz"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_dockerfile_healthcheck_command_works(health_server):
    """The HEALTHCHECK's own command, run here: 0 on 200 (even with a proxy set), else not 0."""
    argv = healthcheck_argv()
    env = {
        "PATH": os.environ["PATH"],
        "ROTATOR_HEALTHCHECK_URL": health_server["url"],
        "HTTP_PROXY": "http://127.0.0.1:9",
    }

    assert subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode == 0
    health_server["status"] = 503
    assert subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode != 0
    env["ROTATOR_HEALTHCHECK_URL"] = "http://127.0.0.1:9/healthz"  # nothing listens there
    assert subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode != 0
    assert health_server["paths"] == ["/healthz", "/healthz"]


def test_dockerfile_bakes_in_no_secret():
    parser = dockerfile()
    secretish = re.compile(r"(TOKEN|PASSWORD|PASSWD|SECRET|API_KEY|PRIVATE|CREDENTIAL)", re.I)

    assert not [k for k in {**parser.envs, **parser.args} if secretish.search(k)]
    copies = [i["value"] for i in parser.structure if i["instruction"] in ("COPY", "ADD")]
    assert not [c for c in copies if re.search(r"(\.pem|\.key|token|secret|credential|\.env)\b", c, re.I)]
    assert not [i for i in parser.structure if i["instruction"] == "ADD"], "COPY only (ADD fetches URLs, unpacks)"


def test_dockerfile_passes_hadolint():
    hadolint = need_program("hadolint")

    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)

    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def deploy_lock_module() -> Any:
    """deploy/lock.py, the one command that makes the lock files (loaded from its path: not a package)."""
    spec = importlib.util.spec_from_file_location("rotator_deploy_lock", DEPLOY / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dockerfile_runs_rotator_under_tini_not_as_pid_1():
    text = DOCKERFILE.read_text()
    stage = final_stage(dockerfile())
    entrypoint = json.loads(next(i["value"] for i in reversed(stage) if i["instruction"] == "ENTRYPOINT"))

    assert entrypoint[:2] == ["/usr/bin/tini", "--"], "tini is PID 1 (Debian's package installs /usr/bin/tini)"
    assert entrypoint[2:] == ["rotator", "daemon"]
    assert "-g" not in entrypoint, "a SIGTERM to the whole group would kill an influxctl child mid-call"
    installs = [i["value"] for i in stage if i["instruction"] == "RUN" and "apt-get install" in i["value"]]
    assert len(installs) == 1 and '"tini=${TINI_VERSION}"' in installs[0] and "--no-install-recommends" in installs[0]
    assert "rm -rf /var/lib/apt/lists/*" in installs[0]
    version = re.search(r"^ARG TINI_VERSION=(\S+)$", text, re.M)
    assert version, "tini's Debian version is pinned in an ARG"
    base = re.search(r"^ARG PYTHON_IMAGE=\S+-(\w+)$", text, re.M)
    assert base and base[1] == "bookworm", "the pinned tini version is bookworm's: change both together"


#: "rotator is PID 1", "the daemon runs as PID 1", ...: untrue while the image's ENTRYPOINT starts tini
PID_1_CLAIM = re.compile(r"\b(rotator|the daemon)( process)? (is|runs as) PID 1\b", re.IGNORECASE)


def documentation_pages() -> list[Path]:
    return sorted({ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *DEPLOY.rglob("*.md")})


@pytest.mark.parametrize(
    "page",
    documentation_pages(),
    ids=lambda page: str(page.relative_to(ROOT)),
)  # fmt: skip
def test_docs_do_not_say_rotator_is_pid_1_in_its_image(page):
    stage = final_stage(dockerfile())
    entrypoint = json.loads(next(i["value"] for i in reversed(stage) if i["instruction"] == "ENTRYPOINT"))
    if Path(entrypoint[0]).name != "tini":
        return  # the claim would be true then

    text = " ".join(page.read_text().split())  # a claim may wrap across lines

    assert [m[0] for m in PID_1_CLAIM.finditer(text)] == []


def test_dockerfile_tini_version_exists_in_bookworm():
    """The pinned version is the one Debian bookworm (the base image's release) ships; checked
    with apt on a bookworm machine (this one, and CI's), skipped elsewhere."""
    version = re.search(r"^ARG TINI_VERSION=(\S+)$", DOCKERFILE.read_text(), re.M)
    release = Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else ""
    if "VERSION_CODENAME=bookworm" not in release or not shutil.which("apt-cache"):
        pytest.skip("needs Debian bookworm's apt-cache (the image's release) to look tini's version up")
    known = subprocess.run(["apt-cache", "madison", "tini"], capture_output=True, text=True, timeout=60).stdout
    if not known.strip():
        pytest.skip("apt-cache knows no tini package: run `apt-get update` first")
    assert version and version[1] in [line.split("|")[1].strip() for line in known.splitlines()], known


def test_dockerfile_installs_third_party_packages_only_from_the_hashed_lock():
    structure = dockerfile().structure
    copies = [i["value"] for i in structure if i["instruction"] == "COPY"]
    assert "deploy/docker/requirements.lock ./" in copies
    runs = [i["value"] for i in structure if i["instruction"] == "RUN"]
    pip_installs = [part for run in runs for part in run.split("&&") if "pip install" in part]
    dependencies, project = pip_installs  # exactly two: the lock's wheels, then rotator itself
    for flag in ("--require-hashes", "--no-deps", "--only-binary=:all:", "--requirement requirements.lock"):
        assert flag in dependencies, f"the lock's install lacks {flag}"
    for flag in ("--no-deps", "--no-build-isolation", "--no-index"):
        assert flag in project, f"rotator's own install lacks {flag} (it would fetch unpinned packages)"
    assert project.split()[-1] == ".", project
    assert any("pip check" in run for run in runs), "pip check: the lock holds every dependency"


def test_docker_lock_pins_every_runtime_dependency_with_hashes():
    lock = deploy_lock_module()
    project = lock.load_project()
    text = (DEPLOY / "docker" / "requirements.lock").read_text()
    pins = lock.pins(text)
    production = set(project["optional-dependencies"]) - {"all", "dev", "demo"}
    build_requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    environment = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux",
                   "platform_system": "Linux", "platform_machine": "x86_64"}  # fmt: skip

    assert set(lock.DOCKER_EXTRAS) == production, "the image holds every production extra, not the demo"
    assert "python deploy/lock.py" in text
    lines = lock.requirement_lines(text)
    assert lines and all(re.fullmatch(r"[a-z0-9][a-z0-9._-]*==\S+ \\", line) for line in lines), lines
    assert all(hashes for _, hashes in pins.values()), "every pinned package has its sha256"
    assert len(pins) == len(lines)
    wanted = [*lock.requirements(project, lock.DOCKER_EXTRAS), *map(lock.Requirement, build_requires)]
    for requirement in wanted:
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        name = lock.canonicalize_name(requirement.name)
        assert name in pins, f"{name} ({requirement}) is not in the lock: run `python deploy/lock.py`"
        version = pins[name][0]
        assert requirement.specifier.contains(version, prereleases=True), f"{name}=={version} breaks {requirement}"


def test_lowest_constraints_pin_each_direct_dependency_at_its_lower_bound():
    lock = deploy_lock_module()
    project = {
        "name": "demo-project",
        "dependencies": ["a>=1.2,<2", "b"],
        "optional-dependencies": {"x": ["a>=1.3", "c[extra]>=0.5 ; python_version >= '3.11'"], "y": ["demo-project[x]"],
                                  "z": ["d~=2.1", "e==3.0.1", "f<4"]},
    }  # fmt: skip

    assert lock.lowest_constraints(project) == ["a==1.3", "c==0.5", "d==2.1", "e==3.0.1"]
    real = lock.lowest_constraints(lock.load_project())
    bounded = {
        lock.canonicalize_name(r.name)
        for r in lock.requirements(lock.load_project(), lock.load_project()["optional-dependencies"])
        if any(s.operator == ">=" for s in r.specifier)
    }
    assert {line.partition("==")[0] for line in real} == bounded


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent matches too."""
    excluded = False
    parts = path.split("/")
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        regex = re.escape(pattern.strip("/")).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def test_dockerfile_build_context_holds_what_copy_needs_and_no_more():
    ignore = DOCKERFILE.with_name("Dockerfile.dockerignore")  # BuildKit: <Dockerfile>.dockerignore
    patterns = [line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")]
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    context = {p for p in tracked if not dockerignore_excludes(patterns, p)}

    sources = [
        src
        for i in dockerfile().structure
        if i["instruction"] == "COPY" and "--from" not in i["value"]
        for src in i["value"].split()[:-1]
    ]
    for src in sources:
        assert any(p == src or p.startswith(src.rstrip("/") + "/") for p in context), f"COPY {src}: not in the context"
    assert "rotator/core/engine.py" in context and "rotator/adapters/vault/kv2.py" in context
    assert not [p for p in context if p.startswith(("tests/", "docs/", ".ci/", "bench/"))]
    assert [p for p in context if p.startswith("deploy/")] == ["deploy/docker/requirements.lock"]
    assert not dockerignore_excludes(patterns, "rotator/__init__.py")
    assert dockerignore_excludes(patterns, "rotator/__pycache__/x.pyc")


# == 6. the journal connection from libpq's environment ====================================


@pytest.fixture
def pg_schema(pg_url: str) -> str:
    """The schema of tests/pg.py's per-test ``pg_url``."""
    return pg_url.rsplit("%3D", 1)[1]


def libpq_env(monkeypatch: pytest.MonkeyPatch, pg_base: str, **values: str) -> None:
    info = psycopg.conninfo.conninfo_to_dict(pg_base)
    base = {"PGHOST": info["host"], "PGPORT": str(info.get("port", 5432)), "PGDATABASE": info["dbname"],
            "PGUSER": info.get("user", "postgres")}  # fmt: skip
    for name in ("PGPASSWORD", "PGPASSFILE", "PGSERVICE", "PGOPTIONS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**base, **values}.items():
        monkeypatch.setenv(name, value)


def test_journal_url_without_password_takes_the_connection_from_the_environment(monkeypatch, pg_base, pg_schema):
    """`journal = "postgresql://"` + the chart's envFrom Secret (PGHOST, PGUSER, PGPASSWORD, ...)."""
    libpq_env(monkeypatch, pg_base, PGPASSWORD="pw-from-a-secret", PGOPTIONS=f"-c search_path={pg_schema}")

    journal = open_journal("postgresql://")
    try:
        assert journal.runs("nothing-yet") == []
        assert journal.lease_holder("p", NOW) is None
    finally:
        journal.close()

    with psycopg.connect(pg_base, autocommit=True) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", (pg_schema,)).fetchone()
    assert tables and tables[0] > 0, "the journal made its tables in the schema from PGOPTIONS"
    with psycopg.connect("postgresql://") as conn:
        assert conn.info.password == "pw-from-a-secret"


def test_pgpassfile_must_not_be_group_readable(monkeypatch, tmp_path, pg_base):
    """Why the chart uses PGPASSWORD: libpq ignores a password file with group access, and a
    Secret volume with fsGroup is mounted 0440."""
    passfile = tmp_path / "pgpass"
    passfile.write_text("*:*:*:*:pw-from-a-file\n")
    libpq_env(monkeypatch, pg_base, PGPASSFILE=str(passfile))

    passfile.chmod(0o600)
    with psycopg.connect(pg_base) as conn:
        assert conn.info.password == "pw-from-a-file"
    passfile.chmod(0o440)
    with psycopg.connect(pg_base) as conn:
        assert not conn.info.password
