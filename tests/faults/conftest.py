"""Fixtures of the fault suite: simulated hosts in network namespaces (skipped with the reason
when this machine refuses them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from camfabric.sim.netns import NetnsHost, available


@pytest.fixture(scope="session")
def netns_available() -> None:
    reason = available()
    if reason:
        pytest.skip(f"fault tests with simulated hosts need network namespaces: {reason}")


@pytest.fixture
def host(netns_available) -> Iterator[NetnsHost]:
    """A fresh simulated host, removed after the test whatever happened."""
    with NetnsHost.create() as made:
        yield made
