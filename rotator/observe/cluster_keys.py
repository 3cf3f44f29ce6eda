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

#: Where an issuer type's tokens live when that is not a cluster (:data:`CLUSTER_KEYS`), by product: Cloud
#: Dedicated's management tokens belong to the account (they have no cluster id, give "full access to all
#: account resources", and `influxctl management list` shows the same tokens through every cluster of the
#: account). A Clustered cluster is its own account: its management tokens stay its own.
_PLACE_KEYS: Mapping[str, Mapping[str, tuple[str, ...]]] = {"influxctl-management": {"dedicated": ("account_id",)}}


def place_keys(kind: str, product: str) -> tuple[str, ...] | None:
    """The keys of a profile that name where an issuer of type ``kind`` lists its tokens, for ``product``
    (the inventory's places); None for a product this module does not know."""
    return _PLACE_KEYS.get(kind, {}).get(product) or CLUSTER_KEYS.get(product)
