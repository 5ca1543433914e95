"""Waitress's own error answers as JSON with CORS, like every answer of the Falcon app.

Waitress answers a request it cannot parse (bad bytes in the path, a malformed request line,
headers too large, a body over the limit) itself, before the app sees it, as `text/plain`.
`JsonErrorChannel` is a Waitress channel whose error task writes Falcon's JSON shape instead:

    {"title": "Bad Request", "description": "<what Waitress found, cut short>"}
"""

from __future__ import annotations

import json

import waitress.channel
import waitress.task

from .app import Cors

DESCRIPTION_CHARS = 200


class JsonErrorTask(waitress.task.ErrorTask):
    """Writes Waitress's error as JSON, with the headers every gateway answer carries."""

    def execute(self) -> None:
        error = self.request.error
        description = str(error.body)
        if len(description) > DESCRIPTION_CHARS:
            description = description[:DESCRIPTION_CHARS] + "…"
        body = json.dumps({"title": error.reason, "description": description}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend([
            ("Content-Type", "application/json"),
            ("Access-Control-Allow-Origin", "*"),
            ("Access-Control-Expose-Headers", Cors.expose),
        ])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JsonErrorChannel(waitress.channel.HTTPChannel):
    error_task_class = JsonErrorTask
