"""API keys from Settings, sent as `Authorization: Bearer <key>` or `X-API-Key`; compared in constant time."""

from __future__ import annotations

import hmac

from flask import Request


def presented_key(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.headers.get("X-API-Key") or None


def key_matches(presented: str | None, keys: list[str]) -> bool:
    """Check every key (no early exit), so timing does not reveal which or how many matched."""
    if presented is None:
        return False
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented.encode(), key.encode())
    return matched
