"""camfabric: a ZeroMQ publish/subscribe camera fabric.

One process owns each camera (the capture node); everything else — the HTTP gateway, the
Prusa Connect uploader, the location tracker, robotics code — is a subscriber on the fabric.
"""

__version__ = "0.1.0"
