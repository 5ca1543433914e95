"""A camera's errors: what a source raises when it cannot open or read."""

from __future__ import annotations

from ..runtime.errors import CamfabricError


class SourceError(CamfabricError):
    """A camera source that could not open or read; the node retries it with backoff."""
