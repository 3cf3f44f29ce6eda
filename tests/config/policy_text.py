"""One minimal policy (an influxctl management token kept in an influxctl profile) as policy-file
text, for tests that write files of a few policies varying their name, schedule and extra lines.
Each policy writes the profile of its own name: two policies may not write one secret."""

from __future__ import annotations

#: ``.format(name=..., schedule=..., extra=...)``; ``extra``: lines of the policy's own table
POLICY = """
[[policy]]
name = "{name}"
schedule = "{schedule}"
{extra}
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "h.example"
[[policy.store]]
type = "influxctl-profile"
config = "influxctl/config.toml"
profile = "{name}"
"""
