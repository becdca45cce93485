"""A loopback TCP proxy between psycopg and the tests' PostgreSQL server that cuts a connection at
the ``COMMIT`` of a chosen transaction: before forwarding it, after the server has answered it (the
answer never reaches the client), or as a network partition would (the client's side closed, the
server's left open and silent, so that its server process waits in the transaction). A cut may
also take the server out of reach (``then_down``): every connection is closed and new ones are
refused until :meth:`CommitCutter.up`.

It reads the client's half of the wire protocol (v3): the startup messages, then typed messages,
among them simple queries (``Q``: psycopg's ``BEGIN`` and ``COMMIT``), statements parsed (``P``)
and bound (``B``: a statement psycopg prepared is bound by name, without its text). A transaction
is chosen by a text one of its statements contains.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from urllib.parse import urlsplit, urlunsplit

#: Startup requests answered by one byte before the real startup message (SSL, GSS encryption).
_NEGOTIATIONS = {80877103, 80877104}
#: The server's CommandComplete for a COMMIT.
_COMMIT_DONE = b"C" + struct.pack("!i", 4 + len(b"COMMIT\0")) + b"COMMIT\0"
MODES = ("before", "after", "partition")


class CommitCutter:
    """Listens on 127.0.0.1; ``arm(text, mode)`` cuts the next transaction whose statements contain
    ``text`` at its COMMIT, once. ``cuts`` lists the modes of the cuts made."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.cuts: list[str] = []
        self._armed: tuple[str, str, bool] | None = None
        self.down = False  # connections are refused (and were all closed) until up()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, pg_url: str) -> str:
        """``pg_url`` through this proxy."""
        parts = urlsplit(pg_url)
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))

    def arm(self, text: str, mode: str, *, then_down: bool = False) -> None:
        assert mode in MODES, mode
        with self._lock:
            self._armed = (text, mode, then_down)

    def _take_cut(self, statements: list[str]) -> tuple[str, bool] | None:
        """How to cut this transaction (mode, then down), if it is the one armed for (then disarmed)."""
        with self._lock:
            if self._armed is None or not any(self._armed[0] in s for s in statements):
                return None
            _text, mode, then_down = self._armed
            self._armed = None
            self.cuts.append(mode)
            return mode, then_down

    def go_down(self) -> None:
        """The server out of reach: every connection closed, new ones refused until :meth:`up`."""
        self.down = True
        for sock in list(self._sockets):
            _close(sock)

    def up(self) -> None:
        self.down = False

    def close(self) -> None:
        self._closed = True
        _close(self._listener)
        for sock in list(self._sockets):
            _close(sock)

    def __enter__(self) -> CommitCutter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connections -------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down:
                _close(client)
                continue
            server = socket.create_connection(self.target)
            for sock in (client, server):  # each message on at once, as libpq sends it (no Nagle delay)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [client, server]
            link = _Link(self, client, server)
            threading.Thread(target=link.client_to_server, daemon=True).start()
            threading.Thread(target=link.server_to_client, daemon=True).start()


class _Link:
    """One client connection and its connection to the server."""

    def __init__(self, proxy: CommitCutter, client: socket.socket, server: socket.socket):
        self.proxy, self.client, self.server = proxy, client, server
        self.statements: dict[bytes, str] = {}  # prepared statement name -> its text
        self.transaction: list[str] = []  # the texts run since BEGIN
        self.swallow = threading.Event()  # "after": the server's answers stop reaching the client
        self.then_down = False  # the cut takes the server out of reach

    def client_to_server(self) -> None:
        buffer, startup = b"", True
        while True:
            try:
                data = self.client.recv(65536)
            except OSError:
                data = b""
            if not data:
                _close(self.server)
                return
            buffer += data
            while (size := _message_size(buffer, startup)) is not None and len(buffer) >= size:
                message, buffer = buffer[:size], buffer[size:]
                try:
                    if startup:
                        startup = struct.unpack("!i", message[4:8])[0] in _NEGOTIATIONS
                        self.server.sendall(message)
                    elif not self._forward(message):
                        return  # cut: the sockets are closed as the mode says
                except OSError:
                    _close(self.client)
                    return

    def _forward(self, message: bytes) -> bool:
        """Send one typed message on, unless it is the COMMIT to cut; ``False`` once cut."""
        kind, body = message[:1], message[5:]
        if kind == b"P":
            name, rest = body.split(b"\0", 1)
            self.statements[name] = rest.split(b"\0", 1)[0].decode(errors="replace")
            self.transaction.append(self.statements[name])
        elif kind == b"B":
            name = body.split(b"\0", 2)[1]
            self.transaction.append(self.statements.get(name, ""))
        elif kind == b"Q":
            query = body.rstrip(b"\0").decode(errors="replace").strip().upper()
            if query == "BEGIN":
                self.transaction = []
            elif query == "COMMIT":
                cut = self.proxy._take_cut(self.transaction)
                if cut is not None:
                    mode, self.then_down = cut
                    return self._cut(message, mode)
        self.server.sendall(message)
        return True

    def _cut(self, commit: bytes, mode: str) -> bool:
        if mode == "after":
            self.swallow.set()
            self.server.sendall(commit)
            return False  # server_to_client closes both once the server has answered
        if self.then_down:
            self.proxy.go_down()
        _close(self.client)
        if mode == "before":
            _close(self.server)
        return False  # "partition": the server's side stays open, silent, until the proxy closes

    def server_to_client(self) -> None:
        seen = b""
        while True:
            try:
                data = self.server.recv(65536)
            except OSError:
                data = b""
            if not data:
                _close(self.client)
                return
            if self.swallow.is_set():
                seen += data
                if _COMMIT_DONE in seen:  # committed on the server; the client never hears it
                    if self.then_down:
                        self.proxy.go_down()
                    _close(self.client)
                    _close(self.server)
                    return
                continue
            try:
                self.client.sendall(data)
            except OSError:
                return  # the client's side was cut ("partition"): the server's stays open


def _message_size(buffer: bytes, startup: bool) -> int | None:
    """The size of the first whole message in ``buffer`` (``None``: its length is not there yet)."""
    if startup:
        return struct.unpack("!i", buffer[:4])[0] if len(buffer) >= 4 else None
    return 1 + struct.unpack("!i", buffer[1:5])[0] if len(buffer) >= 5 else None


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
