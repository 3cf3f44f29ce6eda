"""Stand-ins for ``rotator demo`` and the tests: nothing here is used in production.

- :mod:`rotator.sandbox.influxctl_simulator`: a SIMULATED ``influxctl`` (the InfluxDB Clustered /
  Cloud Dedicated CLI) that reproduces the documented commands against a local JSON state file
  instead of a cluster; :mod:`rotator.sandbox.influxctl_state` is that file and its Python API.
  It is never found on ``PATH``: it runs only where a policy names it explicitly (``rotator demo``
  writes a launcher into its temporary directory; the tests have their own launcher).
- :mod:`rotator.sandbox.openbao_dev`: starts a throw-away in-memory OpenBao dev server on loopback.

Importing this package imports nothing (the simulator runs under a bare ``python3``: stdlib only).
"""
