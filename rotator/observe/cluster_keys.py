"""Which keys of an influxctl profile name the cluster its tokens are managed on, by product.

A Clustered profile's host and port; a Cloud Dedicated profile's account and cluster (its host
serves only query and write; management commands, listing tokens among them, go to the account's
API, whatever host says). One definition for the inventory's places (rotator/observe/inventory.py)
and for rotator sync, which refuses to write a policy's management token into a profile of another
cluster (rotator/runners/sync.py). A module of its own: sync reads it without importing the
inventory, which brings the engine and the journal.
"""

from __future__ import annotations

from collections.abc import Mapping

CLUSTER_KEYS: Mapping[str, tuple[str, ...]] = {"clustered": ("host", "port"), "dedicated": ("account_id", "cluster_id")}
