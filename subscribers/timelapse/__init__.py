"""Print timelapses from frames captured at the right moment, driven by Moonraker.

    from camfabric.subscribers.timelapse import TimelapseService, load_timelapse_config
    with TimelapseService(load_timelapse_config("camfabric.toml")) as service:
        ...                      # videos appear in timelapse.output_dir as prints end

Parts: `config` (the [timelapse] section), `moonraker` (the websocket: print state, G-code
lines), `triggers` (prints and when to take a frame), `recorder` (the first frame captured
after each trigger + settle_s, subscribed on demand), `frames` (a print's frames on disk),
`render` (MP4 + preview, atomically), `service` (the process and its status/timelapse/).
See docs/timelapse.md.
"""

from .config import TimelapseConfig, load_timelapse_config
from .service import TimelapseService

__all__ = ["TimelapseConfig", "TimelapseService", "load_timelapse_config"]
