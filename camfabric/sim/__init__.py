"""The simulation that `camfabric demo` and the tests use: a tabletop scene with tagged boxes
(`tabletop`, the source kind "tabletop" once `register()` has run) and a tracker calibrated for
it (`tracker`). Production code imports nothing from here, and names nothing here either: the
demo and the tests register the scene with the node's source registry."""

from __future__ import annotations

from camfabric.capture_node.sources import register_kind


def register() -> None:
    """Make `[node.cameras.source] kind = "tabletop"` available in this process."""
    register_kind("tabletop", "camfabric.sim.tabletop")
