"""The rotation itself: the engine's state machine, the journal, the adapter contracts, errors,
the clock, retries, secrets and the revocation rule. Imports no vendor SDK, no adapter, no runner."""
