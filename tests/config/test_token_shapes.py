"""Token shapes the policy file refuses and messages mask: the database tokens of InfluxDB Clustered and
Cloud Dedicated (``apiv1_`` + standard base64, with ``+`` and ``/``) as well as InfluxDB 3's ``apiv3_``, and
OpenBao / older Vault batch tokens (``b.`` + base64url, with ``_`` and ``-``: a third of them were missed,
and the others masked only up to their first ``_`` or ``-``)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from rotator.config.inline_secrets import argv_problems, env_problems, find_token, mask_tokens
from rotator.config.policy import PolicyFileError, load_config
from tests.config.policy_text import POLICY

# 64 bytes in standard base64 without padding: 86 characters, '+' and '/' among them
_RAW = bytes(range(190, 254))
APIV1 = "apiv1_" + base64.b64encode(_RAW).decode().rstrip("=")
V2_STANDARD = base64.b64encode(_RAW).decode()  # an InfluxDB v2 token written in standard base64: 86 + "=="


def test_the_samples_have_the_shapes_they_stand_for() -> None:
    assert len(APIV1) == 6 + 86 and "+" in APIV1 and "/" in APIV1
    assert len(V2_STANDARD) == 88 and V2_STANDARD.endswith("==") and ("+" in V2_STANDARD or "/" in V2_STANDARD)


@pytest.mark.parametrize("token", [
    APIV1,
    APIV1 + "==",  # padded
    "apiv1_" + base64.urlsafe_b64encode(_RAW).decode().rstrip("="),  # base64url
    "apiv2_" + "Q" * 40,  # another version of the prefix
    V2_STANDARD,
])  # fmt: skip
def test_database_token_shapes_are_found_and_masked_whole(token: str) -> None:
    for text in (token, f"--token={token}", f"Authorization: Bearer {token}", f"{{tag}} {token}"):
        assert find_token(text), text
    masked = mask_tokens(f"x {token} y")
    assert masked == "x *** y", masked


# OpenBao batch tokens as `bao token create -type=batch` prints them (132 characters, base64url): a `_` or
# `-` early, late, or both
BATCH = [
    "b.AAAAAQK_" + base64.urlsafe_b64encode(bytes(range(7, 100))).decode().rstrip("="),
    "b.AAAAAQLx3-Zq" + base64.urlsafe_b64encode(bytes(range(150, 240))).decode().rstrip("="),
    "b.AAAAAQ_-" + "x" * 40,
    "s.AAAAAQJ" + "a-b_" * 6,  # any of the old prefixes
    "r.Q2xpZW50LXRva2Vu_-Zm9vYmFyYmF6",
]


@pytest.mark.parametrize("token", BATCH)
def test_batch_token_shapes_are_found_and_masked_whole(token: str) -> None:
    assert any(c in token[2:22] for c in "_-"), "a sample with `_` or `-` in its first 20 characters"
    for text in (token, f"--token={token}", f"X-Vault-Token: {token}", f"bad value: {token}"):
        assert find_token(text), text
    assert mask_tokens(f"x {token} y") == "x *** y"
    assert env_problems({"NOTE": token}) and argv_problems(["vault-sync", token])


def _file(tmp_path: Path, line: str) -> Path:
    path = tmp_path / "rotator.toml"
    path.write_text(POLICY.format(name="mgmt", schedule="30d", extra=line))
    return path


@pytest.mark.parametrize(("line", "where"), [
    (f'description = "{{tag}} {APIV1}"', "policy[0] 'mgmt'.description"),  # was valid
    (f'window = "{APIV1}"', "policy[0] 'mgmt'.window"),  # was quoted whole in "is not a window"
    (f'description = "{{tag}} {V2_STANDARD}"', "policy[0] 'mgmt'.description"),
    (f'description = "{{tag}} {BATCH[0]}"', "policy[0] 'mgmt'.description"),
])  # fmt: skip
def test_a_database_token_in_the_policy_file_is_refused_and_never_quoted(tmp_path: Path, line: str, where: str) -> None:
    with pytest.raises(PolicyFileError) as info:
        load_config(_file(tmp_path, line))
    problems = [str(p) for p in info.value.problems]
    assert any(p.startswith(f"{where}: inline secrets are refused: the value looks like a token") for p in problems)
    token = line.split('"')[1].replace("{tag} ", "")
    for text in (str(info.value), *problems):
        assert token not in text and token[6:40] not in text, text
