"""Shared fixtures: real servers (tests/servers.py) and the fake influxctl (tests/fakes/fixtures.py)."""

pytest_plugins = ["tests.servers", "tests.fakes.fixtures"]
