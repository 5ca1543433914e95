"""Checking a fabric endpoint before ZeroMQ sees it.

ZeroMQ answers a malformed address with a bare `ZMQError("Invalid argument")` that names
neither the address nor the fix; `check_endpoint` names both, as an `EndpointError`.
"""

from __future__ import annotations

import re

from .errors import EndpointError

TRANSPORTS = ("tcp", "ipc", "inproc")
_TCP = re.compile(r"^(?:[^:;/\s]+;)?(\*|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\*|[0-9]{1,5})$")


def check_endpoint(endpoint: object, *, bind: bool = False) -> str:
    """`endpoint` when it is a usable ZeroMQ address, else EndpointError saying what to write.

    tcp needs `host:port` (`*` or port 0 only when binding); ipc and inproc need a name."""
    if not isinstance(endpoint, str) or not endpoint:
        raise EndpointError(f"endpoint must be a string like 'tcp://127.0.0.1:5550', "
                            f"got {endpoint!r}")
    transport, sep, address = endpoint.partition("://")
    if not sep:
        hint = f"; did you mean 'tcp://{endpoint}'?" if _TCP.match(endpoint) else ""
        raise EndpointError(f"endpoint {endpoint!r} has no transport: write "
                            f"'tcp://HOST:PORT'{hint}")
    if transport not in TRANSPORTS:
        hint = " (that is an HTTP URL: the gateway's HTTP port is not a fabric endpoint)" \
            if transport in ("http", "https") else ""
        raise EndpointError(f"endpoint {endpoint!r}: unknown transport {transport!r}, use one of "
                            f"{', '.join(t + '://' for t in TRANSPORTS)}{hint}")
    if transport != "tcp":
        if not address:
            raise EndpointError(f"endpoint {endpoint!r} names no {transport} address")
        return endpoint
    match = _TCP.match(address)
    if match is None:
        raise EndpointError(f"endpoint {endpoint!r}: expected tcp://HOST:PORT, "
                            "e.g. tcp://127.0.0.1:5550")
    port = match.group(2)
    if port == "*" or int(port) == 0:
        if not bind:
            raise EndpointError(f"endpoint {endpoint!r}: a subscriber needs the node's real port")
    elif int(port) > 65535:
        raise EndpointError(f"endpoint {endpoint!r}: port {port} is beyond 65535")
    return endpoint
