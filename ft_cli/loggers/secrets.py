"""Credentials in tracking URIs: found, refused in config, and hidden wherever a URI is shown.

A URI may carry them in its user info (`https://me:pw@host`) or in its query
(`?token=...`, `?api_key=...`); either would be written into the run's config,
its overrides and its log, so ft takes them only from the environment and
prints every URI with their values replaced.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlparse

HIDDEN = "***"
# Query parameters that carry a credential, by a word in their name.
SECRET_WORDS = (
    "token",
    "key",
    "secret",
    "password",
    "passwd",
    "pwd",
    "auth",
    "credential",
    "signature",
    "sig",
    "session",
)


def _secret_name(name: str) -> bool:
    words = re.split(r"[^a-z0-9]+|(?<=[a-z])(?=[0-9])", name.lower())
    return any(word in SECRET_WORDS or word.endswith(SECRET_WORDS) for word in words if word)


def secrets_in(uri: str) -> list[str]:
    """Where `uri` holds credentials: 'user info', 'query parameter NAME', ..."""
    parts = urlparse(uri)
    found = []
    if parts.password:
        found.append("a password in its user info")
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if value and _secret_name(name):
            found.append(f"query parameter '{name}'")
    return found


def secret_values(uri: str) -> list[str]:
    """The credential values themselves (to scrub from messages that quote them)."""
    parts = urlparse(uri)
    values = [parts.password] if parts.password else []
    values += [
        v for n, v in parse_qsl(parts.query, keep_blank_values=True) if v and _secret_name(n)
    ]
    return values


def redacted(uri: str) -> str:
    """The URI with every credential replaced by ***."""
    parts = urlparse(uri)
    netloc = parts.netloc
    if parts.password:
        user, _, host = netloc.rpartition("@")
        name = user.split(":", 1)[0]
        netloc = f"{name}:{HIDDEN}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(n, HIDDEN if v and _secret_name(n) else v) for n, v in pairs], safe="*")
    return parts._replace(netloc=netloc, query=query).geturl()


def scrubbed(text: str, uri: str) -> str:
    """`text` (an error message, say) with `uri`'s credentials replaced by ***."""
    for value in sorted(secret_values(uri), key=len, reverse=True):
        text = text.replace(value, HIDDEN)
    return text
