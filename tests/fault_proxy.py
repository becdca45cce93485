"""A faulty network between the cache and the fake Airtable, over real HTTP on 127.0.0.1.

:class:`FaultProxy` forwards every request to an upstream server and can, per request, drop the
answer after the upstream carried the request out (a connection closed after Airtable committed),
hold requests without answering (a frozen server), or stop listening (a refused connection).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:  # quiet
        pass


class FaultProxy:
    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        #: Called with (method, path): True drops the answer after the upstream carried it out.
        self.drop_answer: Callable[[str, str], bool] = lambda method, path: False
        self.mode = "forward"  # forward | freeze
        self.thawed = threading.Event()
        self.thawed.set()
        self.dropped = 0
        self._session = requests.Session()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                proxy._connections.add(self.connection)

            def finish(self) -> None:
                proxy._connections.discard(self.connection)
                super().finish()

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.mode == "freeze":
                    proxy.thawed.wait(60)  # a frozen server: the client's timeout ends the wait
                    self._close()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
                answer = proxy._session.request(self.command, proxy.upstream + self.path, data=body, headers=headers)
                if proxy.drop_answer(self.command, self.path):
                    proxy.dropped += 1
                    self._close()
                    return
                self.send_response(answer.status_code)
                for name in ("Content-Type", "Retry-After", "Date"):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def _close(self) -> None:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

            def send_response(self, code: int, message: str | None = None) -> None:
                # Keep the upstream's Date (Airtable's clock), not this proxy's.
                self.log_request(code)
                self.send_response_only(code, message)
                self.send_header("Server", "fault-proxy")

        self._server = _Server(("127.0.0.1", self._port), Handler)
        self._port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def refuse(self) -> None:
        """Stop listening: connections are refused until :meth:`start`."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        for connection in list(self._connections):  # kept-alive connections end too
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def freeze(self) -> None:
        self.thawed.clear()
        self.mode = "freeze"

    def thaw(self) -> None:
        self.mode = "forward"
        self.thawed.set()

    def stop(self) -> None:
        self.thaw()
        self.refuse()
