"""The admin token: from the environment or a file, never from the config text."""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path

from turnout.exceptions import ConfigError

ADMIN_TOKEN_ENV = "TURNOUT_ADMIN_TOKEN"
ADMIN_TOKEN_FILE_ENV = "TURNOUT_ADMIN_TOKEN_FILE"


def admin_token() -> str | None:
    token = os.environ.get(ADMIN_TOKEN_ENV)
    if token:
        return token
    path = os.environ.get(ADMIN_TOKEN_FILE_ENV)
    if path:
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            raise ConfigError.single(
                ADMIN_TOKEN_FILE_ENV, f"cannot read the admin token file {path}"
            ) from None
        return token or None
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_token_beyond_loopback(host: str, field: str = "gateway.host") -> None:
    """Refuse to expose turnout beyond this machine without an admin token set."""
    if is_loopback(host) or admin_token():
        return
    raise ConfigError.single(
        field,
        f"listening on {host} (beyond loopback) needs an admin token: set {ADMIN_TOKEN_ENV}"
        f" or {ADMIN_TOKEN_FILE_ENV}",
    )


def token_matches(header: str | None, token: str) -> bool:
    if not header or not header.startswith("Bearer "):
        return False
    # Constant time, so response timing does not reveal how much of a guess was right.
    return hmac.compare_digest(header[7:].strip().encode(), token.encode())
