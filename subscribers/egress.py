"""How an HTTP client that carries a secret (the Gemini key, a Prusa Connect token) reaches
its server, and nothing else.

- It never follows a redirect: every request is sent with `allow_redirects=False`, so a 3xx
  is an answer the client turns into an error naming the URL — the secret never goes on to
  wherever `Location` points. (Not `max_redirects = 0`: requests then fails even a request
  that was told not to follow, on reading where the redirect would have gone.)
- To a loopback server it never goes through a proxy named in the environment
  (`HTTP_PROXY`, `ALL_PROXY`, …: requests' `trust_env`): a request meant for this host would
  otherwise leave it, secret and all, possibly in clear. A server elsewhere is reached over
  https, where a proxy only tunnels (CONNECT) and the secret stays inside TLS, so the
  environment's proxy is kept for it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import requests

from ..protocol.security import is_loopback_host


def secret_session(url: str, session: requests.Session | None = None) -> requests.Session:
    """`session` (a new one when None), made fit to carry a secret to the server at `url`."""
    session = session or requests.Session()
    if is_loopback_host(urlsplit(url).hostname or ""):
        session.trust_env = False
    return session


def redirect_target(response: requests.Response, *secrets: str) -> str:
    """Where a 3xx answer points, for an error message (any secret in it replaced)."""
    location = response.headers.get("Location", "")[:200]
    for secret in secrets:
        if secret:
            location = location.replace(secret, "[secret]")
    return location or "nowhere given"


__all__ = ["redirect_target", "secret_session"]
