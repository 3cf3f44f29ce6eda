"""deploy/aws: the SAM template lints and grants least privilege; the Lambda zip and the influxctl
layer build reproducibly (same inputs, same bytes) and hold what the Lambda path needs, nothing else.

The zip is built with ``--no-deps-install`` (no pip, no network); the Lambda-like interpreter test
supplies pydantic and boto3 from this venv, as the Lambda runtime supplies boto3.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # no PyYAML stubs in the venv

from tests.harness import REPO

DEPLOY = REPO / "deploy" / "aws"
TEMPLATE = DEPLOY / "template.yaml"
BUILD_ZIP = DEPLOY / "build_zip.py"
BUILD_LAYER = DEPLOY / "build_influxctl_layer.py"
CFN_LINT = Path(sys.executable).parent / "cfn-lint"

SECRET_ACTIONS = {
    "secretsmanager:DescribeSecret",
    "secretsmanager:GetSecretValue",
    "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecretVersionStage",
    "secretsmanager:ListSecretVersionIds",
}
#: The revocation records (rotator:revoke:<token id> tags) and the managed-by tag, nothing else.
TAG_ACTIONS = {"secretsmanager:TagResource", "secretsmanager:UntagResource"}
TAG_CONDITIONS = {
    "secretsmanager:TagResource": {
        "ForAllValues:StringLike": {"aws:TagKeys": ["managed-by", "rotator:revoke:*", "rotator:attention:*"]},
        "StringEqualsIfExists": {"aws:RequestTag/managed-by": "rotator"},
    },
    "secretsmanager:UntagResource": {"ForAllValues:StringLike": {"aws:TagKeys": ["rotator:revoke:*"]}},
}
ROTATED = {"Ref": "RotatedSecretArns"}
READ_ONLY = {"Ref": "ReadOnlySecretArns"}
VIA_SECRETS_MANAGER = {"kms:ViaService": {"Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"}}
#: What the Lambda runtime provides (boto3) plus, for a --no-deps-install zip, pydantic.
RUNTIME_MODULES = (
    "boto3", "botocore", "jmespath", "dateutil", "s3transfer", "urllib3", "six",
    "pydantic", "pydantic_core", "annotated_types", "typing_extensions", "typing_inspection",
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# The template


class _CfnLoader(yaml.SafeLoader):  # type: ignore[misc]  # no PyYAML stubs here
    """YAML loader that turns CloudFormation short forms (!Ref, !If, ...) into their long form."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506
    return loaded


def _role_policies(template: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    """(condition or None, policy) for every inline policy of the role; a policy under !If has its condition."""
    found: list[tuple[str | None, dict[str, Any]]] = []
    for item in template["Resources"]["RotatorRole"]["Properties"]["Policies"]:
        if "Fn::If" in item:
            condition, when_true, when_false = item["Fn::If"]
            assert when_false == {"Ref": "AWS::NoValue"}, f"the {condition} policy must be absent when false"
            found.append((condition, when_true))
        else:
            found.append((None, item))
    return found


def _statements(template: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    return [
        (condition, statement)
        for condition, policy in _role_policies(template)
        for statement in policy["PolicyDocument"]["Statement"]
    ]


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def test_template_passes_cfn_lint() -> None:
    result = subprocess.run([str(CFN_LINT), str(TEMPLATE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"cfn-lint found problems:\n{result.stdout}{result.stderr}"


def test_secretsmanager_actions_reach_only_the_named_secrets(template: dict[str, Any]) -> None:
    granted: set[str] = set()
    for condition, statement in _statements(template):
        actions = _actions(statement)
        assert statement["Effect"] == "Allow"
        assert not any(a.endswith("*") for a in actions), f"wildcard action in {statement}"
        secret_actions = {a for a in actions if a.startswith("secretsmanager:")}
        if secret_actions and statement["Resource"] == READ_ONLY:
            # An issuer's credential (e.g. the management token of management-api): read only.
            assert condition == "HasReadOnlySecrets"
            assert secret_actions == {"secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"}
        elif secret_actions:
            assert condition is None
            assert statement["Resource"] == ROTATED, f"secretsmanager actions on {statement['Resource']!r}"
            if secret_actions & TAG_ACTIONS:
                (action,) = secret_actions  # one tag action a statement: each has its own condition
                assert statement["Condition"] == TAG_CONDITIONS[action]
            granted |= secret_actions
    assert granted == SECRET_ACTIONS | TAG_ACTIONS
    # A literal "*" among the ARNs is refused before anything is created.
    rules = [a["Assert"] for a in template["Rules"]["NoWildcardSecret"]["Assertions"]]
    assert rules == [{"Fn::Not": [{"Fn::Contains": [arns, "*"]}]} for arns in (ROTATED, READ_ONLY)]
    assert template["Parameters"]["RotatedSecretArns"]["Type"] == "CommaDelimitedList"
    assert "Default" not in template["Parameters"]["RotatedSecretArns"]


# -- what CloudFormation and IAM do with the template, evaluated here (no AWS account in the tests) ----------
# CloudFormation checks a CommaDelimitedList's AllowedPattern against *each* element (AWS docs,
# "Parameters" section) and then every Rules assertion; IAM evaluates the role's statements.

ACCOUNT_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:"


def _parameter_values(template: dict[str, Any], given: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, spec in template["Parameters"].items():
        raw = given.get(name, spec.get("Default"))
        if raw is None:
            raise ValueError(f"{name}: no value")
        items = raw.split(",") if spec["Type"] == "CommaDelimitedList" else [raw]
        pattern = spec.get("AllowedPattern")
        for item in items:
            if pattern is not None and not re.fullmatch(pattern, item):
                raise ValueError(f"{name}: {spec['ConstraintDescription']}")
        values[name] = items if spec["Type"] == "CommaDelimitedList" else raw
    return values


def _evaluate(node: Any, values: dict[str, Any]) -> Any:
    if isinstance(node, dict) and len(node) == 1:
        (function, args), = node.items()
        if function == "Ref":
            return values[args]
        if function == "Fn::Not":
            return not _evaluate(args[0], values)
        if function == "Fn::Contains":
            return _evaluate(args[1], values) in _evaluate(args[0], values)
        if function == "Fn::EachMemberEquals":
            return all(v == _evaluate(args[1], values) for v in _evaluate(args[0], values))
        raise AssertionError(f"rule function {function} not evaluated by this test")
    return node


def instantiate(template: dict[str, Any], **given: str) -> dict[str, Any]:
    """CloudFormation's checks before it creates anything; ValueError names the refused parameter."""
    values = _parameter_values(template, given)
    for rule in template["Rules"].values():
        if "RuleCondition" in rule and not _evaluate(rule["RuleCondition"], values):
            continue
        for assertion in rule["Assertions"]:
            if not _evaluate(assertion["Assert"], values):
                raise ValueError(assertion["AssertDescription"])
    return values


@pytest.mark.parametrize("arns", [
    "*",
    ACCOUNT_ARN + "prod/*",
    ACCOUNT_ARN + "prod/influx-AbCdEf," + ACCOUNT_ARN + "prod/*",
    ACCOUNT_ARN + "prod/influx-??????",
    ACCOUNT_ARN + "*-AbCdEf",
    "arn:aws:secretsmanager:*:123456789012:secret:prod/influx-AbCdEf",
    "arn:aws:secretsmanager:eu-west-1:*:secret:prod/influx-AbCdEf",
    ACCOUNT_ARN + "prod/influx",  # no suffix: would match no secret, or (with a wildcard added) several
    "",
])  # fmt: skip
def test_a_stack_with_a_wildcard_or_partial_secret_arn_is_refused(template: dict[str, Any], arns: str) -> None:
    with pytest.raises(ValueError, match="RotatedSecretArns"):
        instantiate(template, RotatedSecretArns=arns)
    with pytest.raises(ValueError, match="ReadOnlySecretArns"):
        instantiate(template, RotatedSecretArns=ACCOUNT_ARN + "a-AbCdEf", ReadOnlySecretArns=arns or "*")


def test_a_stack_naming_whole_secret_arns_is_accepted(template: dict[str, Any]) -> None:
    gov = "arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:a.b_c+d=e@f-123456"
    rotated = ACCOUNT_ARN + "prod/influx-mgmt-AbCdEf," + gov
    values = instantiate(template, RotatedSecretArns=rotated)
    assert len(values["RotatedSecretArns"]) == 2 and values["ReadOnlySecretArns"] == [""]
    read_only = instantiate(template, RotatedSecretArns=ACCOUNT_ARN + "a-AbCdEf",
                            ReadOnlySecretArns=ACCOUNT_ARN + "m-1a2b3c")
    assert read_only["ReadOnlySecretArns"] == [ACCOUNT_ARN + "m-1a2b3c"]


def _condition_holds(operator: str, condition: dict[str, Any], request: dict[str, Any]) -> bool:
    for key, wanted in condition.items():
        patterns = wanted if isinstance(wanted, list) else [wanted]
        if operator == "ForAllValues:StringLike":
            if not all(any(fnmatch.fnmatchcase(v, p) for p in patterns) for v in request.get(key, [])):
                return False
        elif operator == "StringEqualsIfExists":
            if key in request and request[key] not in patterns:
                return False
        else:
            raise AssertionError(f"condition operator {operator} not evaluated by this test")
    return True


def _allowed(template: dict[str, Any], action: str, tags: dict[str, str] | list[str]) -> bool:
    """Whether the role may make this TagResource (tags: key -> value) or UntagResource (tag keys) call."""
    request: dict[str, Any] = {"aws:TagKeys": list(tags)}
    if isinstance(tags, dict):
        request.update({f"aws:RequestTag/{k}": v for k, v in tags.items()})
    for _, statement in _statements(template):
        if action in _actions(statement) and statement["Resource"] == ROTATED and all(
            _condition_holds(op, cond, request) for op, cond in statement.get("Condition", {}).items()
        ):
            return True
    return False


def test_the_function_may_record_revocations_but_never_remove_or_change_managed_by(template: dict[str, Any]) -> None:
    """Issue 11 item 12: Tag/Untag rights limited to the keys and values the function writes."""
    tag, untag = "secretsmanager:TagResource", "secretsmanager:UntagResource"
    # What finishSecret and revoke-expired do (rotator/runners/lambda_rotation.py).
    assert _allowed(template, tag, {"managed-by": "rotator", "rotator:revoke:tok-1": "2026-01-01T00:00:00Z"})
    assert _allowed(template, untag, ["rotator:revoke:tok-1"])
    # What it must not be able to do.
    assert not _allowed(template, tag, {"managed-by": "someone-else"})
    assert not _allowed(template, tag, {"rotator:revoke:tok-1": "x", "managed-by": ""})
    assert not _allowed(template, untag, ["managed-by"])
    assert not _allowed(template, untag, ["rotator:revoke:tok-1", "managed-by"])
    assert not _allowed(template, tag, {"owner": "x"}) and not _allowed(template, untag, ["owner"])


def test_kms_access_exists_only_with_a_cmk_and_only_for_these_secrets(template: dict[str, Any]) -> None:
    kms = {c: s for c, s in _statements(template) if any(a.startswith("kms:") for a in _actions(s))}
    assert set(kms) == {"HasCmk", "ReadOnlySecretsUseCmk"}
    conditions = template["Conditions"]
    assert conditions["HasCmk"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "KmsKeyArn"}, ""]}]}
    assert conditions["ReadOnlySecretsUseCmk"] == {
        "Fn::And": [{"Condition": "HasCmk"}, {"Condition": "HasReadOnlySecrets"}]
    }
    for condition, actions, secrets in (
        ("HasCmk", {"kms:Decrypt", "kms:GenerateDataKey"}, ROTATED),
        ("ReadOnlySecretsUseCmk", {"kms:Decrypt"}, READ_ONLY),
    ):
        statement = kms[condition]
        assert set(_actions(statement)) == actions
        assert statement["Resource"] == {"Ref": "KmsKeyArn"}
        assert statement["Condition"] == {
            "StringEquals": VIA_SECRETS_MANAGER,
            "StringLike": {"kms:EncryptionContext:SecretARN": secrets},
        }


def test_logs_and_network_permissions_are_scoped(template: dict[str, Any]) -> None:
    statements = _statements(template)
    logs = [s for c, s in statements if any(a.startswith("logs:") for a in _actions(s))]
    assert len(logs) == 1
    assert set(_actions(logs[0])) == {"logs:CreateLogStream", "logs:PutLogEvents"}
    assert logs[0]["Resource"] == {"Fn::GetAtt": ["RotatorLogGroup", "Arn"]}
    ec2 = [(c, s) for c, s in statements if any(a.startswith("ec2:") for a in _actions(s))]
    assert [c for c, _ in ec2] == ["InVpc"], "network-interface permissions only for a function in a VPC"
    function = template["Resources"]["RotatorFunction"]["Properties"]
    assert function["VpcConfig"]["Fn::If"][0] == "InVpc"
    assert function["LoggingConfig"] == {"LogGroup": {"Ref": "RotatorLogGroup"}}
    # Every "*" resource is an EC2 network-interface action (Describe* cannot be scoped).
    for _, statement in statements:
        if statement["Resource"] == "*":
            assert all(a.startswith("ec2:") for a in _actions(statement))


def test_only_secrets_manager_of_this_account_may_invoke(template: dict[str, Any]) -> None:
    permission = template["Resources"]["SecretsManagerInvokePermission"]
    assert permission["Type"] == "AWS::Lambda::Permission"
    assert permission["Properties"] == {
        "Action": "lambda:InvokeFunction",
        "FunctionName": {"Fn::GetAtt": ["RotatorFunction", "Arn"]},
        "Principal": "secretsmanager.amazonaws.com",
        "SourceAccount": {"Ref": "AWS::AccountId"},
    }


def test_function_rotation_schedules_and_revoke_expired_run(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    function = resources["RotatorFunction"]["Properties"]
    assert function["Handler"] == "rotator.runners.aws_lambda.handler"
    assert template["Parameters"]["Runtime"]["Default"] in ("python3.11", "python3.12")
    assert function["Role"] == {"Fn::GetAtt": ["RotatorRole", "Arn"]}
    assert function["Layers"]["Fn::If"][0] == "HasLayer"
    assert set(function["Environment"]["Variables"]) == {"ROTATOR_CONFIG", "ROTATOR_POLICY"}

    event = function["Events"]["RevokeExpired"]
    assert event["Type"] == "Schedule"
    assert json.loads(event["Properties"]["Input"]) == {"action": "revoke-expired"}
    assert event["Properties"]["Schedule"] == {"Ref": "RevokeExpiredSchedule"}
    assert template["Parameters"]["RevokeExpiredSchedule"]["Default"] == "rate(1 hour)"

    identifier, collection, body = resources["Fn::ForEach::RotationSchedules"]
    assert (identifier, collection) == ("SecretArn", ROTATED)
    ((_, schedule),) = body.items()
    assert schedule["Type"] == "AWS::SecretsManager::RotationSchedule"
    assert schedule["DependsOn"] == "SecretsManagerInvokePermission"
    properties = schedule["Properties"]
    assert properties["SecretId"] == {"Ref": "SecretArn"}
    assert properties["RotationLambdaARN"] == {"Fn::GetAtt": ["RotatorFunction", "Arn"]}
    assert properties["RotateImmediatelyOnUpdate"] == {"Ref": "RotateImmediatelyOnUpdate"}
    assert properties["RotationRules"] == {
        "ScheduleExpression": {"Ref": "RotationScheduleExpression"},
        "Duration": {"Ref": "RotationWindow"},
    }


# --------------------------------------------------------------------------------------------
# The Lambda's lock file (deploy/aws/requirements.txt, made by `python deploy/lock.py`)


def _load(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses of the module look themselves up there
    spec.loader.exec_module(module)
    return module


def test_the_documented_example_policy_fits_the_template_s_default_schedule(template: dict[str, Any],
                                                                           tmp_path: Path) -> None:  # fmt: skip
    """docs/aws-lambda.md's example policy file under the stack's default RotationScheduleExpression and
    RotationWindow (and under AWS's default window, the rest of the day, if RotationWindow were left out):
    createSecret does not refuse it, and the compliance line does not flag a token minted at the earliest
    moment of a window (the tightest case) when the next one is due."""
    from types import SimpleNamespace

    from rotator.config import registry
    from rotator.config.policy import load_config
    from rotator.core.contracts import TokenRecord
    from rotator.core.secret import Secret
    from rotator.runners.lambda_rotation import _Rotation, _rotation_after_expiry

    text = (REPO / "docs" / "aws-lambda.md").read_text(encoding="utf-8")
    example = text.split("Example, for an InfluxDB 3 named admin token", 1)[1].split("```toml\n", 1)[1]
    path = tmp_path / "lambda.toml"
    path.write_text(example.split("```", 1)[0], encoding="utf-8")
    (policy,) = load_config(path).policies
    parameters = template["Parameters"]
    schedule = parameters["RotationScheduleExpression"]["Default"]
    assert schedule == "rate(30 days)" and policy.schedule_text == schedule, "the docs say: the same period"
    issuer = registry.build_issuer(policy)
    minted = datetime(2026, 3, 1, tzinfo=UTC)  # a rate() window opens at midnight
    for rules in ({"ScheduleExpression": schedule, "Duration": parameters["RotationWindow"]["Default"]},
                  {"ScheduleExpression": schedule}):
        view = SimpleNamespace(rotation_rules=rules, next_rotation=minted + timedelta(days=30),
                               arn="arn:aws:secretsmanager:eu-west-1:111122223333:secret:influxdb3/admin-AbCdEf")
        _Rotation._check_schedule(SimpleNamespace(t=SimpleNamespace(view=view, policy=policy), issuer=issuer),
                                  minted)  # type: ignore[arg-type]
        current = TokenRecord(Secret("v"), "t", policy.issuer_type, policy.name, minted, minted + policy.lifetime)
        assert _rotation_after_expiry(view, current, policy.grace) is False, rules  # type: ignore[arg-type]


def test_lambda_lock_sections_pin_every_dependency_with_hashes() -> None:
    lock = _load(REPO / "deploy" / "lock.py", "rotator_deploy_lock")
    build_zip = _load(BUILD_ZIP, "rotator_build_zip")
    project = lock.load_project()
    text = (DEPLOY / "requirements.txt").read_text(encoding="utf-8")
    sections = build_zip.requirement_sections(text)
    # what the Lambda runtime (python3.11-3.13, Amazon Linux) evaluates markers with
    environment = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux",
                   "platform_system": "Linux", "platform_machine": "x86_64"}  # fmt: skip

    assert list(sections) == list(lock.LAMBDA_SECTIONS) == ["core", "http", "boto3"]
    assert "python deploy/lock.py" in text
    owner: dict[str, str] = {}
    for section, body in sections.items():
        lines = lock.requirement_lines(body)
        pins = lock.pins(body)
        assert lines and all(line.endswith("\\") and "==" in line for line in lines), (section, lines)
        assert len(pins) == len(lines) and all(hashes for _, hashes in pins.values()), section
        for name in pins:
            assert name not in owner, f"{name} is in both [{owner.get(name)}] and [{section}]: installed twice"
            owner[name] = section
        extra = lock.LAMBDA_SECTIONS[section]
        for requirement in lock.requirements(project, [extra] if extra else [], core=extra is None):
            if requirement.marker is None or requirement.marker.evaluate(environment):
                name = lock.canonicalize_name(requirement.name)
                assert name in pins, f"[{section}] lacks {requirement}: run `python deploy/lock.py`"
                assert requirement.specifier.contains(pins[name][0], prereleases=True), (requirement, pins[name])
    assert owner["pydantic"] == "core" and owner["httpx"] == "http" and owner["boto3"] == "boto3"
    assert owner["pydantic-core"] == "core" and owner["botocore"] == "boto3" and owner["httpcore"] == "http"


def test_zip_installs_the_chosen_sections_with_hashes_for_the_lambda_platform(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pip command build_zip.py runs (captured: the real one needs an index): hash-checked,
    no dependency of its own, wheels for the Lambda's manylinux2014 platform and Python only."""
    build_zip = _load(BUILD_ZIP, "rotator_build_zip")
    ran: list[tuple[list[str], str]] = []

    def pip(command: list[str], check: bool) -> subprocess.CompletedProcess[str]:
        ran.append((command, Path(command[command.index("--requirement") + 1]).read_text()))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(build_zip.subprocess, "run", pip)
    staging = tmp_path / "staging"
    build_zip.install_dependencies(DEPLOY / "requirements.txt", ("core", "boto3"), "3.13", "arm64", staging)

    [(command, requirements)] = ran
    for flag in ("--no-deps", "--require-hashes", "--only-binary=:all:", "--no-compile"):
        assert flag in command
    assert command[command.index("--python-version") + 1] == "3.13"
    assert "manylinux2014_aarch64" in command and command[command.index("--target") + 1] == str(staging)
    assert "pydantic==" in requirements and "boto3==" in requirements and "httpx==" not in requirements
    assert requirements.count("--hash=sha256:") >= requirements.count("==")


# --------------------------------------------------------------------------------------------
# The Lambda zip


def _build_zip(output: Path, *args: str, epoch: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    if epoch is not None:
        env["SOURCE_DATE_EPOCH"] = epoch
    return subprocess.run(
        [sys.executable, str(BUILD_ZIP), "--no-deps-install", "-o", str(output), *args],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


@pytest.fixture(scope="module")
def lambda_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("zip") / "rotator-lambda.zip"
    result = _build_zip(output)
    assert result.returncode == 0, result.stderr
    return output


def test_zip_is_byte_identical_when_built_twice(lambda_zip: Path, tmp_path: Path) -> None:
    again = tmp_path / "elsewhere" / "second.zip"
    result = _build_zip(again)
    assert result.returncode == 0, result.stderr
    assert again.read_bytes() == lambda_zip.read_bytes()
    digest = hashlib.sha256(again.read_bytes()).hexdigest()
    assert f"sha256 {digest}" in result.stdout
    assert f"{again.stat().st_size} bytes" in result.stdout


def test_zip_entries_have_fixed_order_time_and_mode(lambda_zip: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(lambda_zip) as archive:
        infos = archive.infolist()
    names = [info.filename for info in infos]
    assert names == sorted(names)
    assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {info.external_attr >> 16 for info in infos} == {stat.S_IFREG | 0o644}
    assert {info.create_system for info in infos} == {3}

    dated = tmp_path / "dated.zip"
    result = _build_zip(dated, epoch="1767225600")  # 2026-01-01 00:00:00 UTC
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(dated) as archive:
        assert {info.date_time for info in archive.infolist()} == {(2026, 1, 1, 0, 0, 0)}


def test_zip_holds_the_lambda_path_and_nothing_else(lambda_zip: Path) -> None:
    with zipfile.ZipFile(lambda_zip) as archive:
        names = set(archive.namelist())
        entry_points = archive.read("rotator-0.1.0.dist-info/entry_points.txt").decode()
    assert {"rotator/runners/aws_lambda.py", "rotator/adapters/aws/secretsmanager.py",
            "rotator/config/policy.py"} <= names
    assert "aws-secretsmanager = rotator.adapters.aws.secretsmanager:AwsSecretsManagerStore" in entry_points
    assert "vault-kv2" not in entry_points  # its module is not in the zip
    tops = {name.split("/")[0] for name in names}
    assert tops == {"rotator", "rotator-0.1.0.dist-info"}, tops
    assert not {"tests", "hvac", "apscheduler", "boto3", "bench", "deploy"} & tops
    assert not any(n.endswith((".pyc", ".pyo")) or "__pycache__" in n for n in names)
    assert not {"rotator/adapters/vault/kv2.py", "rotator/adapters/vault/auth.py"} & names
    assert not [n for n in names if n.startswith("rotator/sandbox/")]  # the demo's simulator and OpenBao helper


def test_zip_with_compile_holds_reproducible_unchecked_bytecode(tmp_path: Path) -> None:
    """--compile: hash-based .pyc (no timestamp, never checked against a source) for /var/task."""
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    outputs = [tmp_path / "one.zip", tmp_path / "two.zip"]
    for output in outputs:
        result = _build_zip(output, "--compile", "--python-version", running)
        assert result.returncode == 0, result.stderr
    assert outputs[0].read_bytes() == outputs[1].read_bytes()
    tag = sys.implementation.cache_tag
    with zipfile.ZipFile(outputs[0]) as archive:
        pyc = archive.read(f"rotator/config/__pycache__/policy.{tag}.pyc")
        names = archive.namelist()
    assert pyc[4:8] == (0b01).to_bytes(4, "little")  # PEP 552 flags: hash-based, check_source off
    assert len([n for n in names if n.endswith(".pyc")]) == len([n for n in names if n.endswith(".py")])

    other = "3.12" if running != "3.12" else "3.13"
    refused = _build_zip(tmp_path / "never.zip", "--compile", "--python-version", other)
    assert refused.returncode == 2
    assert f"--compile needs the function's Python: this is {running}, the target is {other}" in refused.stderr


LAMBDA_POLICY = """
[[policy]]
name = "mgmt"
schedule = "rate(30 days)"
[policy.issuer]
type = "influxctl-management"
influxctl = "bin/influxctl"
[policy.issuer.profile]
product = "clustered"
host = "cluster.example.com"
[[policy.store]]
type = "aws-secretsmanager"
secret_id = "influx/management-token"
region = "eu-west-1"
"""


@pytest.fixture(scope="module")
def policy_zip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A zip with a policy file, and that file."""
    work = tmp_path_factory.mktemp("policy-zip")
    policy = work / "lambda.toml"
    policy.write_text(LAMBDA_POLICY, encoding="utf-8")
    output = work / "with-policy.zip"
    result = _build_zip(output, "--policy-file", str(policy))
    assert result.returncode == 0, result.stderr
    return output, policy


def test_zip_stores_the_policy_file_and_its_bundle(policy_zip: tuple[Path, Path]) -> None:
    output, policy = policy_zip
    with zipfile.ZipFile(output) as archive:
        assert archive.read("rotator.toml") == policy.read_bytes()
        bundle = json.loads(archive.read("rotator.bundle.json"))
    assert bundle["source"] == {"name": "rotator.toml", "sha256": hashlib.sha256(policy.read_bytes()).hexdigest()}
    assert [p["name"] for p in bundle["policies"]] == ["mgmt"]
    issuer = "rotator.adapters.influxctl.management:InfluxctlManagementIssuer"
    assert bundle["adapters"]["issuer"] == {"influxctl-management": issuer}


def test_zip_refuses_an_invalid_policy_file_naming_it(tmp_path: Path) -> None:
    policy = tmp_path / "lambda.toml"
    policy.write_text(LAMBDA_POLICY.replace('region = "eu-west-1"', ""), encoding="utf-8")
    output = tmp_path / "never.zip"
    result = _build_zip(output, "--policy-file", str(policy))
    assert result.returncode == 2
    assert f"{policy}: 1 problem(s)" in result.stderr and "set `region`" in result.stderr
    assert "rotator-bundle-" not in result.stderr  # the temporary copy is not named
    assert not output.exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[defaults]\nschedule = "0 3 * * 1"\n', ["defaults.schedule", "cron schedule", "rate(30 days)"]),
        ('[[policy]]\nname = "p"\nschedule = "cron(0 3 ? * MON *)"\n', ["policy[0].schedule", "APScheduler"]),
        ("[[policy]\nname=", ["is not valid TOML", "rotator validate"]),
    ],
    ids=["cron in defaults", "AWS cron in a policy", "not toml"],
)
def test_zip_refuses_a_policy_file_the_lambda_cannot_load(tmp_path: Path, text: str, expected: list[str]) -> None:
    policy = tmp_path / "bad.toml"
    policy.write_text(text, encoding="utf-8")
    output = tmp_path / "never.zip"
    result = _build_zip(output, "--policy-file", str(policy))
    assert result.returncode == 2
    for fragment in expected:
        assert fragment in result.stderr
    assert not output.exists()


INFLUXDB3_POLICY = """
[[policy]]
name = "influxdb3-admin"
schedule = "rate(30 days)"
grace = "2d"
[policy.issuer]
type = "influxdb3"
base_url = "https://influxdb.example.com:8181"
credential = CREDENTIAL
[[policy.store]]
type = "aws-secretsmanager"
secret_id = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:influxdb3/admin-AbCdEf"
"""


@pytest.mark.parametrize(
    ("credential", "expected"),
    [
        ('{ file = "operator-token" }', "it is /var/task/operator-token there"),  # relative: the zip's root
        ('{ file = "/etc/rotator/operator-token" }', "the function has no files there"),
        ('{ file = "/opt/../var/task/operator-token" }', "the function has no files there"),
        ('{ file = "/optional/operator-token" }', "the function has no files there"),
    ],
    ids=["relative", "etc", "dotdot-out-of-opt", "opt-prefix"],
)
def test_zip_refuses_a_credential_file_the_lambda_cannot_read(tmp_path: Path, credential: str, expected: str) -> None:
    """Review: `credential = { file = "operator-token" }` was zipped; in Lambda it is /var/task/operator-token,
    which never exists, so every rotation failed. Refused at build time, naming the policy and the key."""
    policy = tmp_path / "lambda.toml"
    policy.write_text(INFLUXDB3_POLICY.replace("CREDENTIAL", credential), encoding="utf-8")
    (tmp_path / "operator-token").write_text("apiv3_placeholder\n", encoding="utf-8")  # beside it on the build host
    output = tmp_path / "never.zip"

    result = _build_zip(output, "--policy-file", str(policy))

    assert result.returncode == 2, result.stderr
    assert f"policy 'influxdb3-admin': issuer.credential = {credential}" in result.stderr
    assert expected in result.stderr and "(`self`)" in result.stderr and '{ env = "NAME" }' in result.stderr
    assert not output.exists()


@pytest.mark.parametrize(
    "credential",
    ['"self"', '{ env = "INFLUXDB3_TOKEN" }', '{ file = "/opt/credentials/operator-token" }',
     '{ file = "/tmp/operator-token" }'],
    ids=["self", "env", "layer", "tmp"],
)
def test_zip_takes_a_credential_the_lambda_can_read(tmp_path: Path, credential: str) -> None:
    policy = tmp_path / "lambda.toml"
    policy.write_text(INFLUXDB3_POLICY.replace("CREDENTIAL", credential), encoding="utf-8")
    output = tmp_path / "rotator-lambda.zip"

    result = _build_zip(output, "--policy-file", str(policy))

    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(output) as archive:
        assert archive.read("rotator.toml") == policy.read_bytes()


VAULT_STORE = """
[[policy.store]]
type = "vault-kv2"
url = "https://vault.example.com:8200"
mount = "secret"
path = "influxdb/mgmt"
[policy.store.auth]
method = "token"
token = {env = "VAULT_TOKEN"}
"""
PROFILE_STORE = """
[[policy.store]]
type = "influxctl-profile"
config = "/var/lib/influxctl/.config/influxctl/config.toml"
profile = "default"
"""


@pytest.mark.parametrize(
    ("extra", "adapter", "module"),
    [
        # a second policy that publishes to Vault only: the CLI/daemon's, in the Lambda's file
        (LAMBDA_POLICY.replace('"mgmt"', '"mgmt-vault"').split("[[policy.store]]")[0] + VAULT_STORE,
         "store adapter 'vault-kv2'", "rotator.adapters.vault.kv2"),
        # a second policy that also publishes to an influxctl profile
        (LAMBDA_POLICY.replace('"mgmt"', '"mgmt-vault"').replace("influx/management-token", "influx/other")
         + PROFILE_STORE, "store adapter 'influxctl-profile'", "rotator.adapters.influxctl.profile"),
    ],
    ids=["vault-kv2", "influxctl-profile"],
)
def test_zip_refuses_a_policy_file_with_an_adapter_the_zip_leaves_out(tmp_path: Path, extra: str, adapter: str,
                                                                       module: str) -> None:  # fmt: skip
    """Review: the zip leaves out the Vault and influxctl-profile stores, but --policy-file took a file with a
    policy using one; the function builds every policy of its file at each invocation, so it failed for every
    secret ("no store adapter named 'vault-kv2'"). Refused at build time, naming the policy and the adapter."""
    policy = tmp_path / "mixed.toml"
    policy.write_text(LAMBDA_POLICY + extra, encoding="utf-8")
    output = tmp_path / "never.zip"
    result = _build_zip(output, "--policy-file", str(policy))
    assert result.returncode == 2, result.stderr
    assert f"policy file {policy}: policy 'mgmt-vault' uses {adapter} (module {module}, left out of the zip" \
        in result.stderr, result.stderr
    assert "'mgmt' uses" not in result.stderr, "the Lambda's own policy is fine"
    assert "a policy file of their own for the CLI or the daemon" in result.stderr
    assert not output.exists()


def test_zip_warns_of_a_third_party_adapter_a_layer_must_supply(tmp_path: Path) -> None:
    """Review: the check above refused every adapter whose module is not in the zip, so also a third-party
    issuer (an entry-point plugin of its own distribution), which docs/adapters.md says serves the Lambda,
    its module coming from a layer (/opt/python). Built (exit 0) with a warning naming the module and the
    layer; rotator's own left-out adapters are still refused (the test above)."""
    plugin = tmp_path / "site"
    (plugin / "acme_issuer-1.0.dist-info").mkdir(parents=True)
    (plugin / "acme_issuer-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: acme-issuer\nVersion: 1.0\n", encoding="utf-8")
    (plugin / "acme_issuer-1.0.dist-info" / "entry_points.txt").write_text(
        "[rotator.issuers]\nacme = acme_issuer:AcmeIssuer\n", encoding="utf-8")
    (plugin / "acme_issuer.py").write_text(
        "from rotator.adapters.http.influxdb2 import InfluxDB2Issuer as AcmeIssuer  # noqa: F401\n", encoding="utf-8")
    policy = tmp_path / "lambda.toml"
    policy.write_text(LAMBDA_POLICY + """
[[policy]]
name = "acme"
schedule = "rate(30 days)"
[policy.issuer]
type = "acme"
base_url = "https://influx.example.com"
credential = "self"
org_id = "0123456789abcdef"
copy_from_authorization_id = "0123456789abcdef"
[[policy.store]]
type = "aws-secretsmanager"
secret_id = "influx/acme"
region = "eu-west-1"
""", encoding="utf-8")
    output = tmp_path / "plugin.zip"
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    env["PYTHONPATH"] = str(plugin)
    result = subprocess.run(
        [sys.executable, str(BUILD_ZIP), "--no-deps-install", "-o", str(output), "--policy-file", str(policy)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"warning: policy file {policy}: module acme_issuer (issuer adapter 'acme' of policy 'acme') is not " \
        "in the zip: it must come from a Lambda layer" in result.stderr, result.stderr
    assert "/opt/python" in result.stderr and "'mgmt'" not in result.stderr
    with zipfile.ZipFile(output) as archive:
        bundle = json.loads(archive.read("rotator.bundle.json"))
        assert not any(n.startswith("acme_issuer") for n in archive.namelist())
    assert bundle["adapters"]["issuer"]["acme"] == "acme_issuer:AcmeIssuer"


def test_handler_path_imports_in_a_lambda_like_interpreter(policy_zip: tuple[Path, Path], tmp_path: Path) -> None:
    """Only the zip and what the runtime provides on sys.path: the first invocation's work before
    it calls AWS (policy bundle read, issuer and store built) imports no pydantic, apscheduler,
    hvac or httpx."""
    task, runtime = tmp_path / "task", tmp_path / "runtime"
    with zipfile.ZipFile(policy_zip[0]) as archive:
        archive.extractall(task)
    runtime.mkdir()
    for module in RUNTIME_MODULES:
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin is not None, f"{module} is not installed in this venv"
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (runtime / source.name).symlink_to(source)
    probe = (
        "import json, sys\n"
        f"sys.path[:0] = [{str(task)!r}]\n"
        f"sys.path.append({str(runtime)!r})\n"
        "import rotator.runners.aws_lambda, rotator.runners.lambda_rotation\n"
        "from rotator.runners.lambda_rotation import DEFAULT_CONFIG, _load_config\n"
        "policy = _load_config(DEFAULT_CONFIG).policy('mgmt')\n"
        "from rotator.config import registry\n"
        "(name, store), = registry.build_stores(policy)\n"
        "issuer = registry.build_issuer(policy)\n"
        "vendor = ('pydantic', 'apscheduler', 'hvac', 'httpx', 'tomlkit', 'psycopg')\n"
        "print(json.dumps({'handler': callable(rotator.runners.aws_lambda.handler), 'store': type(store).__module__,\n"
        "    'issuer': type(issuer).__module__, 'file': rotator.runners.aws_lambda.__file__,\n"
        "    'loaded': sorted(m for m in vendor if m in sys.modules)}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", probe], capture_output=True, text=True, cwd=task, timeout=60
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {
        "handler": True,
        "store": "rotator.adapters.aws.secretsmanager",
        "issuer": "rotator.adapters.influxctl.management",
        "file": str(task / "rotator" / "runners" / "aws_lambda.py"),
        "loaded": [],
    }


# --------------------------------------------------------------------------------------------
# The influxctl layer


def _build_layer(binary: Path, output: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    return subprocess.run(
        [sys.executable, str(BUILD_LAYER), str(binary), "-o", str(output), *extra],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


@pytest.fixture
def fake_elf(tmp_path: Path) -> Path:
    """A small real Linux executable standing in for influxctl."""
    binary = tmp_path / "influxctl"
    shutil.copyfile("/bin/true", binary)
    binary.chmod(0o700)
    return binary


def test_layer_is_byte_identical_with_bin_influxctl_0755(fake_elf: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "layer.zip", tmp_path / "b" / "layer.zip"
    for output in (first, second):
        result = _build_layer(fake_elf, output)
        assert result.returncode == 0, result.stderr
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        (info,) = archive.infolist()
        assert info.filename == "bin/influxctl"
        assert info.external_attr >> 16 == stat.S_IFREG | 0o755
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert archive.read(info) == fake_elf.read_bytes()
    assert f"sha256 {hashlib.sha256(first.read_bytes()).hexdigest()}" in result.stdout
    assert "aws lambda publish-layer-version" in result.stdout


def test_layer_refuses_what_is_not_a_linux_executable(fake_elf: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("influxctl v2.10\n", encoding="utf-8")
    text.chmod(0o755)
    script = tmp_path / "wrapper"
    script.write_text('#!/bin/sh\nexec /usr/local/bin/influxctl "$@"\n', encoding="utf-8")
    script.chmod(0o755)
    not_executable = tmp_path / "influxctl-noexec"
    shutil.copyfile(fake_elf, not_executable)
    not_executable.chmod(0o644)
    machine = "arm64" if os.uname().machine == "x86_64" else "x86_64"
    cases: list[tuple[Path, tuple[str, ...], str]] = [
        (text, (), "is not a Linux executable (ELF)"),
        (script, (), "is a script (#!)"),
        (not_executable, (), f"is not executable; if it is the influxctl binary, run: chmod +x {not_executable}"),
        (tmp_path / "missing", (), "does not exist"),
        (fake_elf, ("--arch", machine), f"not for --arch {machine}"),
    ]
    for binary, args, message in cases:
        output = tmp_path / "refused.zip"
        result = _build_layer(binary, output, *args)
        assert result.returncode == 2, (binary, args, result.stdout)
        assert message in result.stderr, result.stderr
        assert not output.exists()
