"""The Lambda handler's path before the layout by role (``rotator.aws_lambda.handler``).

Kept for one release so that a deployed function whose template still names the old Handler keeps
rotating after an upgrade; new templates name ``rotator.runners.aws_lambda.handler``
(deploy/aws/template.yaml). Standard library only, like the handler itself.
"""

from __future__ import annotations

from rotator.runners.aws_lambda import handler

__all__ = ["handler"]
