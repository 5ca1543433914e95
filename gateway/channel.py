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


class GatewayChannel(waitress.channel.HTTPChannel):
    error_task_class = JsonErrorTask

    def send_continue(self) -> None:
        if self.request is not None and self.request.completed:  # nothing left to wait for
            self.request.expect_continue = False
            return
        super().send_continue()
