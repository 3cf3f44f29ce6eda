"""Pytest fixtures for the OpenAPI-validated HTTP fakes (loaded from tests/conftest.py via pytest_plugins).

The framework is :mod:`tests.fakes.openapi_fake` (how to define a fake: its docstring). Every
fixture here serves its fake for one test and, at teardown, **fails the test** with
``SpecMismatchError`` if any request the fake received or any response it sent did not match
the official spec (take the ones a test provokes on purpose with ``take_mismatches()``).

``management_api_fake``: a Cloud Dedicated or Clustered cluster (:mod:`tests.fakes.management_api_fake`),
run once per product by default::

    def test_list(management_api_fake):                    # runs for dedicated and for clustered
        mgmt_value, mgmt_id = management_api_fake.add_management_token()
        db_value, db_id = management_api_fake.add_token("human-made", [{"action": "read", "resource": "*"}])
        management_api_fake.base_url        # http://127.0.0.1:PORT/api/v0
        management_api_fake.cluster_url     # the data plane (GET /query)
        management_api_fake.fail_next("create", 409)       # next create answers 409 {code, message}
        management_api_fake.activation_delay_s = 2         # new tokens answer 401 on /query for 2 s
        management_api_fake.is_active(db_value)            # state inspection; tokens(), token_by_id(id)

    @pytest.mark.parametrize("management_api_fake", ["dedicated"], indirect=True)
    def test_dedicated_only(management_api_fake): ...
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.management_api_fake import ManagementApiFake

__all__ = ["management_api_fake"]


@pytest.fixture(params=["dedicated", "clustered"])
def management_api_fake(request: pytest.FixtureRequest) -> Iterator[ManagementApiFake]:
    """A running fake cluster (Management API v0 + data plane) for ``request.param``'s product."""
    fake = ManagementApiFake(request.param)
    with fake.running():
        yield fake


# --------------------------------------------------------------------------------------------
# influxdb3 / influxdb2 issuers (this section: the influxdb3 and influxdb2 fakes)
#
# ``influxdb3_fake``: an InfluxDB 3 Core server (:mod:`tests.fakes.influxdb3_fake`);
# ``influxdb3_enterprise_fake``: the same on the Enterprise spec (resource tokens);
# ``influxdb2_fake``: an InfluxDB OSS v2 server (:mod:`tests.fakes.influxdb2_fake`), hashed tokens.
#
#     def test_mint(influxdb3_fake):
#         influxdb3_fake.url                       # http://127.0.0.1:PORT
#         influxdb3_fake.operator_value            # the _admin token (tests only)
#         influxdb3_fake.add_named_admin("human")  # -> value
#         influxdb3_fake.fail_next("named_admin", 409); influxdb3_fake.activation_delay_s = 1
#         influxdb3_fake.problem(value)            # None if the server accepts it

from tests.fakes.influxdb2_fake import InfluxDB2Fake  # noqa: E402
from tests.fakes.influxdb3_fake import InfluxDB3Fake  # noqa: E402

__all__ += ["influxdb2_fake", "influxdb3_enterprise_fake", "influxdb3_fake"]


@pytest.fixture
def influxdb3_fake() -> Iterator[InfluxDB3Fake]:
    """A running InfluxDB 3 Core fake; fails the test at teardown on any spec mismatch."""
    with InfluxDB3Fake("core").running() as fake:
        yield fake


@pytest.fixture
def influxdb3_enterprise_fake() -> Iterator[InfluxDB3Fake]:
    """A running InfluxDB 3 Enterprise fake (resource tokens); fails the test on any spec mismatch."""
    with InfluxDB3Fake("enterprise").running() as fake:
        yield fake


@pytest.fixture
def influxdb2_fake() -> Iterator[InfluxDB2Fake]:
    """A running InfluxDB OSS v2 fake (hashed tokens); fails the test on any spec mismatch."""
    with InfluxDB2Fake().running() as fake:
        yield fake
