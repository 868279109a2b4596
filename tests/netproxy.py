"""A small loopback TCP proxy for failure tests: it forwards, and on request cuts or stalls the connection.

    with NetProxy(target_port) as proxy:        # listens on 127.0.0.1:<proxy.port>
        ...connect the client to proxy.port...
        proxy.cut_after(5000)   # forward 5,000 more bytes server -> client, then close both sides
        proxy.stall()           # stop forwarding in both directions, keep the sockets open

``client_filter`` / ``server_filter`` rewrite each chunk going to the server / to the client (plain-text
protocols only), e.g. to make a POP3 server look as if it had no UIDL command.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from types import TracebackType

Filter = Callable[[bytes], bytes]


class NetProxy:
    def __init__(
        self,
        target_port: int,
        *,
        target_host: str = "127.0.0.1",
        client_filter: Filter | None = None,
        server_filter: Filter | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.client_filter = client_filter
        self.server_filter = server_filter
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._budget: int | None = None  # bytes server -> client left before the cut
        self._stalled = threading.Event()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.cuts = 0
        self._accept_thread = threading.Thread(target=self._accept, daemon=True)
        self._accept_thread.start()

    # controls -----------------------------------------------------------------------------------------
    def cut_after(self, nbytes: int) -> None:
        """Forward ``nbytes`` more bytes from the server, then close the client and server sockets."""
        with self._lock:
            self._budget = nbytes

    def stall(self) -> None:
        """Stop forwarding (both directions) while keeping every socket open."""
        self._stalled.set()

    def close(self) -> None:
        self._closed.set()
        self._stalled.clear()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.close()
        for t in self._threads:
            t.join(5)

    def __enter__(self) -> NetProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # internals ----------------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            for src, dst, to_client in ((client, server, False), (server, client, True)):
                t = threading.Thread(
                    target=self._pump, args=(src, dst, to_client, (client, server)), daemon=True
                )
                self._threads.append(t)
                t.start()

    def _pump(
        self, src: socket.socket, dst: socket.socket, to_client: bool, pair: tuple[socket.socket, ...]
    ) -> None:
        try:
            while not self._closed.is_set():
                if self._stalled.is_set():
                    self._closed.wait(0.05)
                    continue
                try:
                    data = src.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                while self._stalled.is_set() and not self._closed.is_set():
                    self._closed.wait(0.05)  # hold what was read while stalled
                if self._closed.is_set():
                    break
                flt = self.server_filter if to_client else self.client_filter
                if flt is not None:
                    data = flt(data)
                cut = False
                if to_client:
                    with self._lock:
                        if self._budget is not None:
                            if len(data) >= self._budget:
                                data, cut = data[: self._budget], True
                                self._budget = 0
                            else:
                                self._budget -= len(data)
                try:
                    if data:
                        dst.sendall(data)
                except OSError:
                    break
                if cut:
                    self.cuts += 1
                    break
        finally:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()
