"""What the Lambda runtime gets when a step fails: the exception ``handle`` raises is printed by the runtime
(errorMessage, and the caller's answer) past rotator's redacting filter, so its own text must be redacted.

Unit tests of an error path: the step is replaced by one that fails (the protocol's own failures are tested
against moto in test_aws_lambda.py)."""

from __future__ import annotations

import logging

import pytest

from rotator.core.errors import PermanentError, RotatorError
from rotator.core.secret import Secret
from rotator.runners import lambda_rotation

_EVENT = {"Step": "createSecret", "SecretId": "arn:aws:secretsmanager:us-east-1:1:secret:s", "ClientRequestToken": "t"}
_LOOSE_VALUE = "M.V1." + "q" * 43  # token-shaped, and no Secret holds it: the redactor does not know it


@pytest.fixture
def failing_step(monkeypatch: pytest.MonkeyPatch) -> list[BaseException]:
    """``handle``'s step raises the exception put in the list."""
    raised: list[BaseException] = []

    def step(*_args: object) -> None:
        raise raised[0]

    monkeypatch.setattr(lambda_rotation, "_load_config", lambda _path: object())
    monkeypatch.setattr(lambda_rotation, "_rotation_step", step)
    return raised


def test_a_rotator_error_quoting_a_known_value_reaches_the_runtime_redacted(failing_step, caplog):
    value = Secret("the-live-token-value-" + "x" * 20)
    failing_step.append(PermanentError(f"store refused {value.reveal()}", hint=f"look at {value.reveal()}"))
    with caplog.at_level(logging.ERROR, logger="rotator"), pytest.raises(PermanentError) as info:
        lambda_rotation.handle(_EVENT)
    assert str(info.value) == "store refused ***", "the text the runtime prints as errorMessage"
    assert info.value.hint == "look at ***"
    assert "store refused ***" in caplog.text


def test_an_unexpected_error_reaches_the_runtime_masked_with_its_traceback_in_the_log(failing_step, caplog):
    value = Secret("another-live-token-" + "y" * 20)
    failing_step.append(ValueError(f"cannot compare {value.reveal()} with {_LOOSE_VALUE}"))
    with caplog.at_level(logging.ERROR, logger="rotator"), pytest.raises(RotatorError) as info:
        lambda_rotation.handle(_EVENT)
    assert str(info.value) == "unexpected ValueError: cannot compare *** with ***"
    assert info.value.__suppress_context__, "the original (with its text) is not chained for the runtime to print"
    assert "the traceback is in the function's log" in info.value.hint
    (record,) = [r for r in caplog.records if r.getMessage().startswith("unexpected ValueError")]
    assert record.exc_info is not None and record.exc_info[0] is ValueError, "the traceback, for the log's filter"
