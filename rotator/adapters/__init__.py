"""rotator's built-in issuers and stores, registered as entry points (see pyproject.toml)."""
