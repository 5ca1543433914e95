"""Fixtures of the gateway tests: a real Publisher on loopback standing in for a node, a
FrameCache over it, the Falcon app in-process, and real Waitress gateways on port 0."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import falcon.testing
import pytest

from camfabric.gateway.app import create_app
from camfabric.gateway.cache import FrameCache
from camfabric.gateway.config import GatewayConfig
from camfabric.gateway.server import Gateway
from camfabric.protocol import Publisher

from ..conftest import ANY_PORT
from .support import FakeNode


@pytest.fixture
def publisher(zmq_context) -> Iterator[Publisher]:
    with Publisher(ANY_PORT, context=zmq_context) as pub:
        yield pub


@pytest.fixture
def node(publisher) -> FakeNode:
    return FakeNode(publisher)


@pytest.fixture
def make_cache(zmq_context) -> Iterator[Callable[..., FrameCache]]:
    caches: list[FrameCache] = []

    def make(*endpoints: str, **kwargs) -> FrameCache:
        cache = FrameCache(list(endpoints), context=zmq_context, **kwargs).start()
        caches.append(cache)
        return cache

    yield make
    for cache in caches:
        cache.close()


@pytest.fixture
def cache(make_cache, node) -> FrameCache:
    # The stand-in node also plays the tracker and the services: the same endpoint in each role.
    return make_cache(node.endpoint, tracker=[node.endpoint], services=[node.endpoint])


@pytest.fixture
def client(cache) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(cache, GatewayConfig(snap_timeout_s=0.5)))


@pytest.fixture
def make_gateway(zmq_context) -> Iterator[Callable[..., Gateway]]:
    gateways: list[Gateway] = []

    def make(*endpoints: str, **config) -> Gateway:
        cfg = GatewayConfig(port=0, subscribe=tuple(endpoints), **config)
        gateway = Gateway(cfg, context=zmq_context).start()
        gateways.append(gateway)
        return gateway

    yield make
    for gateway in gateways:
        gateway.stop()
