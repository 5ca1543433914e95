"""The rate-limited location tracker: object positions in workspace millimetres.

    from camfabric.subscribers.tracker import Tracker, load_tracker_config
    with Tracker(load_tracker_config("camfabric.toml")) as tracker:
        ...                       # World on tracker.endpoint (default tcp://127.0.0.1:5560)

Parts: `intake` (when a camera's frame is taken, and from where), `budget` (the gate at send
time and the Gemini budget, shared by the host's trackers through a state file), `detectors`
(aruco, gemini), `geometry` (pixels to mm), `pipeline` (one camera's frame to the world),
`statefile` (state shared by the processes of a host), `world` (the tracked objects),
`service` (the process).
See docs/tracker.md.
"""

from .config import TrackerConfig, load_tracker_config
from .service import Tracker
from .world import WorldModel

__all__ = ["Tracker", "TrackerConfig", "WorldModel", "load_tracker_config"]
