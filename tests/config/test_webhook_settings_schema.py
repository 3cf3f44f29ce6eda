"""The published description of a webhook (`rotator schema`, docs/policy.schema.json, what editors show)
names the signature scheme rotator uses, not the removed one."""

from __future__ import annotations

import json

from rotator.config.policy import config_json_schema


def test_the_schema_describes_standard_webhooks_signatures_and_whsec_secrets() -> None:
    """WebhookSettings' docstring still said ``X-Rotator-Signature: sha256=<hex>``, a body-only signature
    removed for Standard Webhooks' (a receiver built from it would refuse every delivery)."""
    webhook = config_json_schema()["$defs"]["WebhookSettings"]
    text = json.dumps(webhook)
    assert "X-Rotator-Signature" not in text and "sha256=<hex>" not in text
    assert "webhook-signature: v1," in webhook["description"] and "whsec_" in webhook["description"]
    assert "whsec_" in webhook["properties"]["secret"]["description"]
