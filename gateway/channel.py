"""GatewayChannel: Waitress's HTTP channel, answering as the rest of the API does.

- Waitress answers a request it cannot parse (bad bytes in the path, a malformed request
  line, headers too large, a body over the limit) itself, before the app sees it, as
  `text/plain`. Here its error task writes Falcon's JSON shape, with the CORS headers:

      {"title": "Bad Request", "description": "<what Waitress found, cut short>"}

- A request with `Expect: 100-continue` and no body (curl and some HTTP libraries send one)
  got `100 Continue` and then nothing until the client gave up: Waitress marks the request
  incomplete again after sending the 100, waiting for a body that never comes. A request
  whose content has all arrived gets its answer and no 100 (RFC 9110 §10.1.1: a server may
  omit the 100 when it has already received the content).
- The time a request began to arrive (`request_started`), for the server's header timeout, and
  the task serving it (`current_task`), which an MJPEG stream reads before it takes the
  connection over.
"""

from __future__ import annotations

import json
import time
from typing import Any

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


class GatewayTask(waitress.task.WSGITask):
    """Waitress's WSGI task, made known to its channel: an MJPEG stream reads from it how its
    body is framed (`chunked_response`) before taking the connection over (mjpeg.py)."""

    def __init__(self, channel: Any, request: Any) -> None:
        super().__init__(channel, request)
        channel.current_task = self


class GatewayChannel(waitress.channel.HTTPChannel):
    """A client connection that answers errors as JSON, does not wait for a body after
    `100 Continue` that was never coming, and remembers when its current request began to
    arrive, so that the server cuts off a request head trickling in (a slowloris)."""

    task_class = GatewayTask
    error_task_class = JsonErrorTask
    current_task: Any = None
    request_started = 0.0

    def received(self, data: bytes) -> bool:
        before = self.request
        result = super().received(data)
        if self.request is not None and self.request is not before:
            self.request_started = time.monotonic()
        return result

    def send_continue(self) -> None:
        if self.request is not None and self.request.completed:  # nothing left to wait for
            self.request.expect_continue = False
            return
        super().send_continue()
