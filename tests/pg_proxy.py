"""A TCP proxy on loopback that loses the client's connection right after forwarding COMMIT (or instead of it).

Between atomicplug and a PostgreSQL server: it reads the client's side of the
wire protocol message by message, and when a simple-protocol ``Query`` whose
text is ``COMMIT`` has been forwarded, it closes the client's socket. The
server's side stays open, so the server goes on with the COMMIT as it would
after a network cut: the client cannot know whether it happened.

Clients must not negotiate TLS or GSS (``sslmode=disable&gssencmode=disable``
in the URL, see :meth:`CommitDroppingProxy.url`): the proxy reads plain messages.
"""

from __future__ import annotations

import socket
import struct
import threading
from urllib.parse import urlsplit, urlunsplit

__all__ = ["CommitDroppingProxy"]


class CommitDroppingProxy:
    """``with CommitDroppingProxy("127.0.0.1", 5432) as proxy: proxy.url(server_url)``."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.dropped = threading.Event()  # set once a COMMIT went through and its client was cut off
        self.refuse_after_drop = False  # True: once dropped, new connections are closed at once
        self.forward_commit = True  # False: the COMMIT never reaches the server (both sides are cut)
        self._closing = False
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> CommitDroppingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing = True
        self.listener.close()
        for sock in self._sockets:
            _close(sock)

    def url(self, server_url: str) -> str:
        """``server_url`` pointing at the proxy instead (user, password and database kept)."""
        parts = urlsplit(server_url)
        credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        query = "sslmode=disable&gssencmode=disable"
        return urlunsplit((parts.scheme, f"{credentials}127.0.0.1:{self.port}", parts.path, query, ""))

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refuse_after_drop and self.dropped.is_set():
                _close(client)
                continue
            server = socket.create_connection(self.target)
            self._sockets += [client, server]
            threading.Thread(target=self._client_to_server, args=(client, server), daemon=True).start()
            threading.Thread(target=self._server_to_client, args=(server, client), daemon=True).start()

    def _client_to_server(self, client: socket.socket, server: socket.socket) -> None:
        """Forward whole messages; after a COMMIT query (or instead of it), cut the client off."""
        buffer = b""
        started = False  # the first message (startup) has no type byte
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                buffer += data
                while True:
                    header = 4 if not started else 5
                    if len(buffer) < header:
                        break
                    (length,) = struct.unpack("!I", buffer[header - 4 : header])
                    size = length + header - 4
                    if len(buffer) < size:
                        break
                    message, buffer = buffer[:size], buffer[size:]
                    commit = started and message[:1] == b"Q" and message[5:].rstrip(b"\0").strip().upper() == b"COMMIT"
                    if commit and not self.forward_commit:
                        self.dropped.set()
                        _close(client)
                        _close(server)  # the server sees its client go and rolls back
                        return
                    server.sendall(message)
                    if commit:
                        self.dropped.set()
                        _close(client)
                        return
                    started = True
        except OSError:
            pass
        _close(server)

    def _server_to_client(self, server: socket.socket, client: socket.socket) -> None:
        try:
            while True:
                data = server.recv(65536)
                if not data:
                    break
                client.sendall(data)
        except OSError:
            pass
        _close(client)
        _close(server)  # the server's reply came (the COMMIT is decided) or it closed first


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
