"""A TCP server on loopback that hands each connection to a method, on a thread of its own.

The HTTP framing and proxy tests each need a server that says exactly what the test scripts;
this is the part they share: the listening socket, the accept loop, a connection count.
"""

from __future__ import annotations

import socket
import threading


class LoopbackServer:
    """Subclasses define :meth:`serve`; :meth:`close` (or leaving the ``with``) stops accepting."""

    def __init__(self) -> None:
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def serve(self, client: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._listener.close()

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            self.connections += 1
            threading.Thread(target=self.serve, args=(client,), daemon=True).start()
