"""A function-backed :class:`lamina.transport.http.Transport`, for unit tests without sockets.

``MockTransport(handler)`` passes each request to ``handler`` with its body
read into bytes (as a server would read it), and returns what it answers;
``reply`` makes responses with a JSON or text body.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Callable, Mapping

from lamina.transport.http import Request, Response

Handler = Callable[[Request], Response]


class MockTransport:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    def handle(self, request: Request, *, stream: bool = False) -> Response:
        body = request.body
        if body is not None and not isinstance(body, bytes):
            body = b"".join(body)
        response = self.handler(Request(request.method, request.url, request.headers, body, request.timeout))
        if not response.url:
            response.url = request.url
        return response

    def close(self) -> None:
        pass


def reply(status: int, *, json: object = None, text: str | None = None, content: bytes = b"",
          headers: Mapping[str, str] | None = None) -> Response:
    """A response; ``json`` or ``text`` set the body and its Content-Type."""
    sent = dict(headers or {})
    if json is not None:
        content = jsonlib.dumps(json).encode()
        sent.setdefault("Content-Type", "application/json")
    elif text is not None:
        content = text.encode()
        sent.setdefault("Content-Type", "text/plain; charset=utf-8")
    return Response(status, headers=sent, content=content)
