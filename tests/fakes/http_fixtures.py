"""Fixtures for the OpenAPI-validated HTTP fakes (filled in by the HTTP issuer work)."""
