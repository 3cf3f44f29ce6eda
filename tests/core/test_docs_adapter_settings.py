"""Every setting of every built-in adapter is documented (docs/policy.md says "This page lists every key").

The adapters are the ones the policy loader finds (rotator/config/registry.py: the entry points of
pyproject.toml whose target is in rotator/), and their settings are what the loader validates and
`rotator schema` prints: each settings model's JSON schema, nested tables included
(``profile.tls.ca``, ``auth.secret_id``). A key counts as documented when a code span outside the
examples names it (``key``, ``table.key``, ``key = ...``) in a section of docs/policy.md or
docs/issuers.md whose title names the adapter, or in a section of those pages that such a section
links to (influxctl-database's settings table points at influxctl-management's for ``profile``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from rotator.config import registry
from rotator.config.adapter_settings import settings_json_schema
from rotator.core.credentials import CredentialRef
from tests.harness import REPO

DOCS = ("policy.md", "issuers.md")
#: Types shared by many adapters, each documented once in a section of its own (docs page, anchor): a
#: field of such a type is checked in its adapter's sections, the type's own keys (``file``, ``env``) there.
SHARED: dict[str, tuple[type, str, str]] = {CredentialRef.__name__: (CredentialRef, "policy.md", "credentials")}
_HEADING = re.compile(r"^(#{2,6}) (.+)$", re.MULTILINE)
_FENCED = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"\]\((policy\.md|issuers\.md)?#([\w-]+)\)")


def _anchor(title: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but ``-`` and ``_`` dropped, spaces as ``-``."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def _sections(doc: str) -> list[tuple[int, str, str]]:
    """(level, title, text up to the next heading of the same or a higher level) of each heading of ``doc``."""
    text = (REPO / "docs" / doc).read_text(encoding="utf-8")
    # (a `# comment` in a fenced example is no heading; blanked to its length, the offsets stay the text's)
    heads = list(_HEADING.finditer(_FENCED.sub(lambda m: re.sub(r"[^\n]", " ", m[0]), text)))
    found = []
    for i, head in enumerate(heads):
        level = len(head[1])
        end = next((h.start() for h in heads[i + 1:] if len(h[1]) <= level), len(text))
        found.append((level, head[2], text[head.start():end]))
    return found


SECTIONS = {doc: _sections(doc) for doc in DOCS}


def _section(doc: str, anchor: str) -> str:
    return "\n".join(text for _, title, text in SECTIONS[doc] if _anchor(title) == anchor)


def _adapter_docs(name: str) -> str:
    """The text of the top-level sections (##) titled with adapter ``name``, and of the sections they link to."""
    word = re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])")
    own = [(doc, text) for doc in DOCS for level, title, text in SECTIONS[doc] if level == 2 and word.search(title)]
    linked = [_section(link[1] or doc, link[2]) for doc, text in own for link in _LINK.finditer(text)]
    return "\n".join([text for _, text in own] + linked)


def _names(text: str, key: str) -> bool:
    """Whether a code span of ``text`` outside its fenced examples names ``key``: ``key``, ``table.key``,
    ``key.sub``, or ``key = ...`` (also inside an inline table: ``{ read = [...], write = [...] }``)."""
    pattern = re.compile(rf"(?:^|[.{{,\s]){re.escape(key)}(?:$|\.|\s*=)")
    return any(pattern.search(span.strip()) for span in _CODE_SPAN.findall(_FENCED.sub("", text)))


def _keys(node: dict[str, Any], defs: dict[str, Any], prefix: str = "", seen: tuple[str, ...] = ()
          ) -> Iterator[str]:  # fmt: skip
    """The dotted key of every property under ``node``, alternatives (anyOf/oneOf/allOf), array items,
    tables of any key and ``$ref`` followed; not into a shared type (:data:`SHARED`)."""
    ref = node.get("$ref")
    if ref is not None:
        name = ref.rsplit("/", 1)[-1]
        if name not in seen and name not in SHARED:
            yield from _keys(defs[name], defs, prefix, (*seen, name))
        return
    for alternatives in ("anyOf", "oneOf", "allOf"):
        for sub in node.get(alternatives, []):
            yield from _keys(sub, defs, prefix, seen)
    for nested in (node.get("items"), node.get("additionalProperties")):
        if isinstance(nested, dict):
            yield from _keys(nested, defs, prefix, seen)
    for key, sub in node.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        yield path
        yield from _keys(sub, defs, path, seen)


def _settings_schema(kind: registry.Kind, name: str) -> dict[str, Any]:
    return settings_json_schema(registry.load(kind, name).settings_model, ref_template="#/$defs/{model}")


def _built_in() -> list[tuple[registry.Kind, str]]:
    kinds: tuple[registry.Kind, ...] = ("issuer", "store")
    return [(kind, name) for kind in kinds for name in registry.available(kind)
            if registry.target(kind, name).startswith("rotator.")]


BUILT_IN = _built_in()


def test_the_built_in_adapters_are_found() -> None:
    # (an empty list would pass every test below)
    assert {name for _, name in BUILT_IN} >= {
        "influxctl-management", "influxctl-database", "management-api", "influxdb3", "influxdb2",
        "vault-kv2", "aws-secretsmanager", "influxctl-profile"}


@pytest.mark.parametrize(("kind", "name"), BUILT_IN, ids=[name for _, name in BUILT_IN])
def test_every_setting_of_a_built_in_adapter_is_documented(kind: registry.Kind, name: str) -> None:
    schema = _settings_schema(kind, name)
    keys = set(_keys(schema, schema.get("$defs", {})))
    assert keys, f"{kind} {name}: no settings found in its settings model's schema"
    docs = _adapter_docs(name)
    missing = sorted(key for key in keys if not _names(docs, key.rsplit(".", 1)[-1]))
    assert missing == [], (
        f"{kind} {name}: settings named in no section of docs/policy.md or docs/issuers.md about it: document "
        "them in its settings table")


def test_every_key_of_a_shared_settings_type_is_documented_in_its_section() -> None:
    for type_name, (model, doc, anchor) in SHARED.items():
        schema = settings_json_schema(model, ref_template="#/$defs/{model}")
        text = _section(doc, anchor)
        assert text, f"docs/{doc} has no section #{anchor}"
        missing = [key for key in _keys(schema, schema.get("$defs", {})) if not _names(text, key)]
        assert missing == [], f"{type_name}: keys not named in docs/{doc}#{anchor}"


def test_the_aws_secretsmanager_table_states_the_models_defaults_and_bounds() -> None:
    """docs/policy.md's table of the store, row by row, against its model's schema: every field has a row,
    an optional field without a default says "none", the others their default, and the type cell each
    bound."""
    rows = _table_rows(_section("policy.md", "store-aws-secretsmanager"))
    schema = _settings_schema("store", "aws-secretsmanager")
    required = set(schema.get("required", []))
    for key, spec in schema["properties"].items():
        assert key in rows, f"aws-secretsmanager: no row for `{key}`"
        type_cell, default_cell = rows[key]
        if key in required:
            assert default_cell == "required", key
        elif spec.get("default") is None:
            assert default_cell.startswith("none"), key
        else:
            assert re.fullmatch(rf'`"?{re.escape(_toml(spec["default"]))}"?`', default_cell), (key, default_cell)
        for bound in ("minimum", "maximum", "exclusiveMinimum"):
            if bound in spec:
                assert re.search(rf"(?<![\d.]){_toml(spec[bound])}(?![\d.])", type_cell), (key, bound, type_cell)
        for value in spec.get("enum", []):
            assert f'"{value}"' in type_cell, (key, value, type_cell)


def _table_rows(text: str) -> dict[str, tuple[str, str]]:
    """key -> (type, default) of a `| key | type | default | meaning |` table in ``text``."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and re.fullmatch(r"`\w+`", cells[0]):
            rows[cells[0].strip("`")] = (cells[1], cells[2])
    return rows


def _toml(value: object) -> str:
    """``value`` as the docs write it: a whole float without its ``.0`` (``timeout_s = 10``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
