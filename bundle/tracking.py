"""Where bundles are registered: is the MLflow tracking server reachable at all?"""

from __future__ import annotations

import socket
from urllib.parse import urlparse


def tracking_server_problem(uri: str | None, timeout: float = 3.0) -> str | None:
    """Why an http(s) tracking URI cannot be reached (one TCP connect), or None.

    MLflow's own client retries an unreachable server with back-off for minutes; a service
    starting up or a training run should learn that at once instead.
    """
    parsed = urlparse(uri or "")
    if parsed.scheme not in ("http", "https"):
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "localhost", port), timeout=timeout):
            return None
    except OSError as exc:
        return f"MLflow tracking server {parsed.scheme}://{parsed.hostname}:{port} is unreachable ({exc.strerror or exc})"
