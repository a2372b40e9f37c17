"""Calling the admin API from the command line, with errors a person can act on."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from turnout.control.auth import ADMIN_TOKEN_ENV, admin_token


def admin_request(
    args: argparse.Namespace, method: str, path: str, body: Any = None, **query: str
) -> Any:
    """JSON in, JSON out; exits with a clear message on any failure."""
    return json.loads(_call(args, method, path, body, **query) or b"null")


def admin_text(args: argparse.Namespace, path: str) -> str:
    """A GET whose answer is text (CSV), not JSON."""
    return _call(args, "GET", path).decode()


def _call(
    args: argparse.Namespace, method: str, path: str, body: Any = None, **query: str
) -> bytes:
    url = args.admin_url.rstrip("/") + path
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("accept", "application/json")
    if data is not None:
        req.add_header("content-type", "application/json")
    token = admin_token()
    if token:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            answer: bytes = resp.read()
            return answer
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise SystemExit(
                f"turnout: the admin API at {args.admin_url} refused the token;"
                f" set {ADMIN_TOKEN_ENV} to its admin token"
            ) from None
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        raise SystemExit(f"turnout: {method} {path} failed ({exc.code}): {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SystemExit(
            f"turnout: cannot reach the admin API at {args.admin_url} ({reason});"
            " is turnout running? (--admin-url)"
        ) from None


def admin_get(args: argparse.Namespace, path: str, **query: str) -> Any:
    return admin_request(args, "GET", path, **query)
