"""camfabric: a ZeroMQ publish/subscribe camera fabric.

One process owns each camera (the capture node); everything else — the HTTP gateway, the
Prusa Connect uploader, the location tracker, robotics code — is a subscriber on the fabric.
"""

from camfabric.runtime.version import __version__

__all__ = ["__version__"]
