"""Refusing credentials written into the policy file, by pattern.

A policy file is read by people, copied into tickets, stored in Git and bundled into the Lambda
zip: it must never hold a credential. Adapters take ``{ file = ... }`` / ``{ env = ... }``
references (rotator/core/credentials.py). This module finds what still slips in, everywhere a free
form value is accepted, with one mechanism:

- a *name* that says secret (``VAULT_TOKEN``, ``AWS_SECRET_ACCESS_KEY``, ``--api-key``, ``PGPASSWORD``):
  :func:`is_secret_name`;
- a *value* that looks like a token (``M.V1.…``, ``apiv3_…``/``apiv1_…``, ``hvs.…``/``s.…`` Vault tokens,
  ``AKIA…``/``ASIA…`` AWS keys, JWTs, ...): :func:`find_token`;
- a *URL* carrying credentials in its user-info or in a query key such as ``token``, ``sig`` or
  ``password``: :func:`url_problem`.

Users: hook ``env`` and ``command`` (rotator/config/daemon_config.py), webhook URLs (same), the journal
URL and adapter settings (rotator/config/policy.py). Every message says where and how to fix it and never
repeats the value; :func:`mask_tokens` scrubs token-looking text from any message that quotes
input. Only the standard library: the policy bundle's cold path may import it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "InlineSecretError",
    "argv_problems",
    "env_problems",
    "find_token",
    "is_secret_name",
    "is_secret_query_key",
    "mask_tokens",
    "starts_a_token",
    "string_values",
    "url_problem",
]

#: Words that make a variable, flag or query key name a secret holder (after upper-casing and
#: turning ``-``/``.`` into ``_``). ``PWD`` is left out on purpose: it is the working directory.
_SECRET_WORDS = re.compile(
    r"TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|PRIVATE_?KEY|API_?KEY|ACCESS_?KEY|AUTHORIZATION|COOKIE"
    r"|SESSION_?KEY|SIGNATURE"
)
#: Names that end like this hold a secret (``*_KEY``, ``KEY``, ``SIG``, ``PASS``).
_SECRET_ENDINGS = re.compile(r"(?:^|_)(?:KEY|SIG|PASS|AUTH)$|_PWD$")
#: ... unless they name where a secret is or identify one (``VAULT_TOKEN_FILE``, ``AWS_ACCESS_KEY_ID``,
#: ``ROTATOR_TOKEN_ID``): those hold no secret.
_REFERENCE_ENDINGS = re.compile(r"(?:^|_)(?:FILE|PATH|DIR|ENV|VAR|NAME|URL|ADDR|HOST|KEY_ID|TOKEN_ID|ID_FILE)$")
_SECRET_ID = re.compile(r"(?:^|_)SECRET_ID$")  # an AppRole secret id is a secret, unlike other *_ID

#: Token shapes, searched anywhere in a value (``--token=M.V1.x``, ``Bearer eyJ...``).
_TOKEN = re.compile(
    r"(?<![A-Za-z0-9])(?:"
    r"M\.V\d+\.[A-Za-z0-9._~+/=-]{8,}"  # InfluxDB Clustered / Cloud Dedicated management tokens
    # InfluxDB 3 Core / Enterprise (apiv3_, base64url) and Clustered / Cloud Dedicated database tokens
    # (apiv1_, standard base64 with + and /): any version, either alphabet, the padding masked too
    r"|apiv[0-9]_[A-Za-z0-9+/_-]{8,}={0,2}"
    r"|hv[sbr]\.[A-Za-z0-9_-]{8,}"  # Vault service / batch / recovery tokens
    # OpenBao and older Vault tokens: 24 characters after the prefix; a batch token is longer, in base64url
    r"|[sbr]\.[A-Za-z0-9_-]{20,}"
    r"|(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{16}(?![A-Za-z0-9])"  # AWS access key ids (a key pair's public half)
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"  # JWTs (OIDC, Kubernetes service accounts)
    r"|gh[pousr]_[A-Za-z0-9]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}"  # GitHub and Slack tokens
    r"|[A-Za-z0-9+/_-]{86}=="  # InfluxDB v2 / Cloud Serverless API tokens (64 bytes in base64 or base64url)
    r")"
)
_HEADER = re.compile(r"(?i)^\s*(?:proxy-)?authorization\s*:|^\s*(?:cookie|x-api-key|x-auth-token)\s*:|\bbearer\s+\S")
_SECRET_QUERY_KEYS = frozenset({"key", "sig", "sign", "pass", "pwd", "auth", "code", "apikey", "api_key"})

_HOOK_FIX = (
    "pass a path, not the value: e.g. env = { VAULT_TOKEN_FILE = \"/run/secrets/vault-token\" } and let the "
    "command read the file (rotator's own credentials use { file = ... } or { env = ... } references)"
)


class InlineSecretError(ValueError):
    """A credential written inline; the message names where and the fix, never the value."""


def _normal(name: str) -> str:
    return re.sub(r"[-.\s]+", "_", name.strip().lstrip("-")).upper()


def is_secret_name(name: str) -> bool:
    """Whether a variable, flag or query key of this name would hold a secret."""
    normal = _normal(name)
    if not normal:
        return False
    if _SECRET_ID.search(normal):
        return True
    if _REFERENCE_ENDINGS.search(normal):
        return False
    return bool(_SECRET_WORDS.search(normal) or _SECRET_ENDINGS.search(normal))


def find_token(value: str) -> bool:
    """Whether ``value`` contains something shaped like a token or an access key."""
    return _TOKEN.search(value) is not None


def mask_tokens(text: str) -> str:
    """``text`` with every token-looking part replaced by ``***`` (for messages that quote input)."""
    return _TOKEN.sub("***", text)


def starts_a_token(text: str, start: int, part: str) -> bool:
    """Whether ``part``, found in ``text`` at ``start`` right after a ``:`` (a run id after
    ``rotator:<policy>:``), is the beginning of a token-shaped text rather than a word of its own: an
    InfluxDB v2 token in standard base64 pasted after a tag has a + or / early on, and what comes before
    it would read as a run id, and be shown as one. No token shape holds a ``:``, so a token that overlaps
    ``part`` starts inside it: masking the text from ``start`` on finds it. Not the whole text: that can
    mask what comes before (a policy named ``s.`` and 20 letters has a Vault token's shape)."""
    return not mask_tokens(text[start:]).startswith(part)


_EMBEDDED_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")


def is_secret_query_key(key: str) -> bool:
    """Whether a URL's query key of this name holds a secret (a secret's name, or a short one such as
    ``sig`` or ``pwd`` that URLs use): here, and for the journal URL rotator shows (journal._redact_url)."""
    return is_secret_name(key) or key.lower() in _SECRET_QUERY_KEYS


def url_problem(url: str, fix: str) -> str | None:
    """Why ``url`` may not be written in a policy file (credentials in it), or None.

    A text that does not start with a URL is searched for URLs (``"see https://u:p@h/"``)."""
    if not _looks_like_url(url):
        for found in _EMBEDDED_URL.findall(url)[:20]:
            problem = url_problem(found, fix) if _looks_like_url(found) else None
            if problem:
                return problem
        return None
    try:
        parts = urlsplit(url.strip())
        user, password = parts.username, parts.password
    except ValueError:
        return None  # not a URL this check can read; the field's own validator reports it
    if password or (user and "@" in parts.netloc and find_token(user)):  # "user:@host": no password
        return f"the URL carries a password in its user-info; {fix}"
    if user and is_secret_name(user):
        return f"the URL's user-info looks like a credential; {fix}"
    try:
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        query = []
    for key, value in query + parse_qsl(parts.fragment, keep_blank_values=True):
        if value and is_secret_query_key(key):
            return f"the URL's query key {key!r} holds a credential; {fix}"
    if find_token(url):
        return f"the URL contains a token; {fix}"
    return None


def _looks_like_url(value: str) -> bool:
    return "://" in value and re.match(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://", value) is not None


def env_problems(env: Mapping[str, str]) -> list[str]:
    """Why each entry of a child's extra environment is refused (no value is repeated)."""
    problems = []
    for name, value in env.items():
        if is_secret_name(name) and value:
            problems.append(f"refused variable {name}: its name says it holds a secret; {_HOOK_FIX}")
        elif isinstance(value, str) and find_token(value):
            problems.append(f"refused variable {name}: its value looks like a token; {_HOOK_FIX}")
        elif isinstance(value, str) and "://" in value:
            problem = url_problem(value, _HOOK_FIX)
            if problem:
                problems.append(f"refused variable {name}: {problem}")
    return problems


def argv_problems(argv: Sequence[str]) -> list[str]:
    """Why each argument of a hook command is refused (``--token=...``, ``--password X``, a token, ...)."""
    fix = _HOOK_FIX.replace("pass a path, not the value", "give the command a path, not the value")
    problems = []
    previous_flag: str | None = None
    for index, arg in enumerate(argv):
        where = f"argument {index}"
        name, eq, value = arg.partition("=")
        if previous_flag is not None and not arg.startswith("-"):
            problems.append(f"{where} follows {previous_flag} and would be a secret inline; {fix}")
        elif find_token(arg):
            problems.append(f"{where} looks like a token; {fix}")
        elif eq and value and " " not in name and is_secret_name(name):
            problems.append(f"{where} sets {name.strip()} inline; {fix}")
        elif _HEADER.search(arg):
            problems.append(f"{where} is a credential header; {fix}")
        elif "://" in arg:
            problem = url_problem(arg, fix)
            if problem:
                problems.append(f"{where}: {problem}")
        previous_flag = arg if (arg.startswith("-") and not eq and is_secret_name(arg)) else None
    return problems


def string_values(data: object, limit: int = 10_000) -> Iterable[tuple[str, str]]:
    """``(dotted key, value)`` of every string in nested tables and lists, iteratively (no recursion)."""
    stack: list[tuple[str, object]] = [("", data)]
    seen = 0
    while stack and seen < limit:
        where, node = stack.pop()
        seen += 1
        if isinstance(node, str):
            yield where, node
        elif isinstance(node, Mapping):
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in node.items())
        elif isinstance(node, list | tuple):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(node))
