"""Passwords out of what hpo prints and stores: storage URLs and any text that holds one.

    >>> redact("postgresql://ml:s3cret@db.example:5432/hpo")
    'postgresql://ml:***@db.example:5432/hpo'
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (safe for logs, errors and reports)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparsable storage URL>"


# a URL with a password (``scheme://user:password@...``) anywhere inside a longer text
_URL_WITH_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s/@:'\"<>]*:[^\s'\"<>]*@[^\s'\"<>]*")
PASSWORD_PART = re.compile(r"(://[^\s/@:'\"<>]*:)[^\s'\"<>]*(?=@)")


def redact_secrets(value: Any) -> Any:
    """``value`` (a config dict, list or text, nested) with every URL's password as ``***``.

    For what is stored where others read it: the study's ``hpo_config`` user attr, LLM prompts,
    reports. Strings with no password inside are returned unchanged; a trailing ``#STUDY``
    (``sampler.warm_start_from``) is kept.

        >>> redact_secrets({"sampler": {"warm_start_from": ["postgresql://u:pw@db/hpo#old", "x"]}})
        {'sampler': {'warm_start_from': ['postgresql://u:***@db/hpo#old', 'x']}}
        >>> redact_secrets("warm start from mysql://u:pw@db/h#a, b")
        'warm start from mysql://u:***@db/h#a, b'
    """
    if isinstance(value, str):
        return _URL_WITH_PASSWORD.sub(_redact_match, value) if "://" in value else value
    if isinstance(value, dict):
        return {k: redact_secrets(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_secrets(v) for v in value)
    return value


def _redact_match(match: re.Match[str]) -> str:
    text = match.group(0)
    url, sep, fragment = text.rpartition("#")
    if not sep or "@" in fragment or "/" in fragment:  # no ``#STUDY`` suffix
        url, sep, fragment = text, "", ""
    trail = re.search(r"[,;.)\]}]+$", url)  # punctuation of the sentence around the URL
    tail = trail.group(0) if trail else ""
    url = url[: len(url) - len(tail)]
    safe = redact(url)
    if "***" not in safe:  # unparsable for SQLAlchemy: mask the userinfo's password part
        safe = PASSWORD_PART.sub(r"\1***", url, count=1)
    return safe + tail + sep + fragment


def restore_password(url: str, *known: str | None) -> str:
    """``url`` with a redacted password (``***``) taken back from a ``known`` URL that has the
    same user, host and port (e.g. the worker's own ``--storage``); else ``url`` unchanged.

        >>> restore_password("postgresql://ml:***@db/old#a", "postgresql://ml:pw@db/hpo")
        'postgresql://ml:pw@db/old#a'
    """
    head, sep, fragment = url.rpartition("#")
    if not sep or "@" in fragment or "/" in fragment:
        head, sep, fragment = url, "", ""
    try:
        parsed = make_url(head)
    except ArgumentError:
        return url
    if parsed.password != "***":
        return url
    for other in known:
        if not other:
            continue
        try:
            candidate = make_url(other)
        except ArgumentError:
            continue
        if (candidate.password and candidate.username == parsed.username
                and candidate.host == parsed.host
                and (candidate.port or None) == (parsed.port or None)):
            restored = parsed.set(password=candidate.password)
            return restored.render_as_string(hide_password=False) + sep + fragment
    return url
