"""The Vault/OpenBao KV v2 store and its authentication."""
