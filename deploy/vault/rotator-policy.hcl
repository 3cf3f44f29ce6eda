# Vault / OpenBao ACL policy for rotator's vault-kv2 store: exactly what it needs for ONE
# KV version 2 secret, nothing else.
#
# Substitute the two placeholders with the store's settings before writing the policy:
#   <mount>  the KV v2 mount     (store setting `mount`, default "secret")
#   <path>   the secret's path   (store setting `path`, e.g. "influxdb/management")
#
#   sed -e 's|<mount>|secret|g' -e 's|<path>|influxdb/management|g' rotator-policy.hcl > rotator.hcl
#   vault policy write rotator rotator.hcl       # or: bao policy write rotator rotator.hcl
#
# One rotator serving several secrets: repeat the two KV stanzas per secret (or use a glob
# such as "<mount>/data/influxdb/*" if every secret under that prefix is rotator's).
# In a namespace (Vault Enterprise / OpenBao), write the policy in that namespace; the paths
# stay relative to it.
#
# tests/deploy/test_deploy_daemon.py proves it against OpenBao: a token holding only this policy
# (no `default` policy) reads, publishes twice with compare-and-set, renews itself, and is
# refused (403) on a neighbouring secret.

# The secret's versions: read the current and previous ones; write a new version with
# cas = the version read (create for the first write, update afterwards).
path "<mount>/data/<path>" {
  capabilities = ["create", "read", "update"]
}

# The secret's metadata: current_version, the list of versions, and custom_metadata
# (managed-by = rotator, policy, token_id, rotated_at), set after each new version.
# "patch": rotator sends only its own custom_metadata keys as a JSON merge patch (Vault 1.9+,
# OpenBao), so an operator's own keys stay, even one written at that very moment.
# "update": for Vault before 1.9 (no PATCH): rotator then reads the metadata and writes the whole
# map back. Without "patch" rotator does the same, and warns once: a key an operator writes
# between that read and that write is lost. The data write creates the metadata, so "create"
# is not needed here.
path "<mount>/metadata/<path>" {
  capabilities = ["read", "update", "patch"]
}

# rotator's own Vault token: look it up (TTL) and renew it before it expires. Vault's
# built-in `default` policy grants these too; they are here for tokens created without it.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}

# Optional: lets rotator warn when the mount keeps fewer than 3 versions (the previous
# token could be evicted during its grace period). Without it the check is skipped, and the
# store's first read also asks sys/internal/ui/mounts (one request, no capability of its own)
# whether <mount> is a KV version 2 engine: a KV version 1 engine is refused before any token is minted.
# path "<mount>/config" {
#   capabilities = ["read"]
# }
