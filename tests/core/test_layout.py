"""The layout by role (docs/design-notes.md, "Layout"): which folder of rotator/ may import which.

Read from the source (every import, lazy ones included), so a wrong import fails here before it
fails a cold start or an install without an extra.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROTATOR = Path(__file__).resolve().parents[2] / "rotator"
#: Third-party SDKs that only adapters (and runners, lazily) may import.
VENDOR_SDKS = {"hvac", "boto3", "botocore", "httpx", "tomlkit", "psycopg", "apscheduler", "prometheus_client"}
#: role -> the rotator packages it must never import.
FORBIDDEN = {
    "core": ("rotator.runners", "rotator.observe", "rotator.adapters", "rotator.sandbox"),
    "config": ("rotator.runners", "rotator.observe", "rotator.adapters", "rotator.sandbox"),
    "observe": ("rotator.runners", "rotator.adapters", "rotator.sandbox"),
    "adapters": ("rotator.runners", "rotator.observe", "rotator.sandbox"),
}
FAMILIES = sorted(p.name for p in (ROTATOR / "adapters").iterdir() if (p / "__init__.py").exists())


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at module level) for every import of ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(ROTATOR.parent).with_suffix("").parts[:-1])
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found += [(base, id(node) in top)]
            found += [(f"{base}.{alias.name}", id(node) in top) for alias in node.names]
    return found


def _modules(role: str) -> list[Path]:
    return sorted((ROTATOR / role).rglob("*.py"))


#: Old import paths kept for one release, each only forwarding to its new home.
FORWARDERS = {"aws_lambda.py"}  # the Lambda Handler of deployed templates: rotator.aws_lambda.handler


def test_every_module_of_rotator_has_a_role() -> None:
    flat = sorted(p.name for p in ROTATOR.glob("*.py") if p.name not in {"__init__.py", *FORWARDERS})
    assert flat == [], "a module at the top of rotator/: put it in the folder of its role"
    assert not (ROTATOR.parent / "adapters").exists(), "the adapters live in rotator/adapters/"
    assert FAMILIES == ["aws", "http", "influxctl", "vault"]


@pytest.mark.parametrize("role", sorted(FORBIDDEN))
def test_a_role_imports_only_what_it_may(role: str) -> None:
    wrong = [f"{path.relative_to(ROTATOR.parent)}: {module}"
             for path in _modules(role) for module, _ in _imports(path)
             if module.startswith(FORBIDDEN[role])]  # fmt: skip
    assert _modules(role) and wrong == []


@pytest.mark.parametrize("role", ["core", "config"])
def test_core_and_config_import_no_vendor_sdk_at_module_level(role: str) -> None:
    wrong = [f"{path.relative_to(ROTATOR.parent)}: {module}"
             for path in _modules(role) for module, top in _imports(path)
             if top and module.split(".")[0] in VENDOR_SDKS]  # fmt: skip
    assert wrong == []


@pytest.mark.parametrize("family", FAMILIES)
def test_an_adapter_family_imports_no_other_family(family: str) -> None:
    others = tuple(f"rotator.adapters.{f}" for f in FAMILIES if f != family)
    wrong = [f"{path.relative_to(ROTATOR.parent)}: {module}"
             for path in _modules(f"adapters/{family}") for module, _ in _imports(path)
             if module.startswith(others)]  # fmt: skip
    assert _modules(f"adapters/{family}") and wrong == []


def test_the_old_lambda_handler_path_forwards_to_the_new_one() -> None:
    from rotator import aws_lambda
    from rotator.runners import aws_lambda as runner

    assert aws_lambda.handler is runner.handler
