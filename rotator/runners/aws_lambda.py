"""The AWS Lambda entry point for Secrets Manager rotation: ``rotator.runners.aws_lambda.handler``.

Deliberately thin: importing this module imports nothing but the standard library, so the core
keeps its rule of no vendor SDK at import time. The first invocation imports
:mod:`rotator.runners.lambda_rotation` (boto3, the policy bundle reader, the adapters), which holds
the protocol and documents it; a warm Lambda reuses what that import loaded.
"""

from __future__ import annotations

from typing import Any

__all__ = ["handler"]


def handler(event: Any, context: Any) -> Any:
    """Secrets Manager's ``{Step, SecretId, ClientRequestToken[, RotationToken]}``, or a scheduled
    ``{"action": "revoke-expired"}``."""
    from rotator.runners.lambda_rotation import handle, setup_lambda_logging

    setup_lambda_logging()
    return handle(event, context)
