"""Shared fixtures: real servers (tests/servers.py, tests/aws_server.py), the fake influxctl
(tests/fakes/fixtures.py) and the OpenAPI-validated HTTP fakes (tests/fakes/http_fixtures.py)."""

pytest_plugins = ["tests.servers", "tests.pg", "tests.aws_server", "tests.fakes.fixtures", "tests.fakes.http_fixtures"]
