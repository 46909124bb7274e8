"""Fail fast and clearly when a hub model or dataset is needed but cannot be reached.

Without this, an offline machine spends about a minute in retries before the
libraries give up with a generic message.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from ft_cli.errors import FtError

_TIMEOUT_S = 3.0


def offline_forced() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in _OFFLINE_VARS)


_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def hub_reachable() -> bool:
    """True when the hub's host answers a TCP connect within a few seconds."""
    if offline_forced():
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or 443
    try:
        with socket.create_connection((host, port), timeout=_TIMEOUT_S):
            return True
    except OSError:
        return False


def unreachable_error(key: str, name: str, hint: str) -> FtError:
    return FtError(
        f"{key}: '{name}' is not a local path, not in the Hugging Face cache, and the hub"
        f" cannot be reached (offline?); {hint}"
    )
