"""Real faults for tests and the reliability report: a silent server, a frozen server, a killing proxy.

- :class:`SilentServer` accepts TCP connections on 127.0.0.1 and never answers (a hung MLflow as the
  client sees it: the connection succeeds, the answer never comes).
- :func:`frozen` SIGSTOPs a real server's whole process group (the kernel still accepts connections into
  the listen backlog) and SIGCONTs it afterwards.
- :class:`KillingProxy` forwards TCP to a real server and, when a request line matches, SIGKILLs the
  server's process group either before forwarding that request or after the server started answering it
  (the answer is dropped: the server did the work, the client never hears of it). ``retarget`` points it
  at a restarted server, so clients keep one URL across the kill.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


class SilentServer:
    """Accepts connections and holds them open without reading or writing a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self.held:
            with contextlib.suppress(OSError):
                conn.close()
        self.sock.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def frozen(proc: Any) -> Iterator[None]:
    """SIGSTOP the process group of ``proc`` (a ``Popen`` started in its own session) for the block."""
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGCONT)


def kill_group(proc: Any) -> None:
    """SIGKILL ``proc``'s process group and reap it (no clean shutdown: a crash)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=30)


class KillingProxy:
    """A loopback TCP proxy in front of ``backend_port`` with one-shot kill triggers."""

    def __init__(self, backend_port: int) -> None:
        self.backend_port = backend_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._trigger: tuple[re.Pattern[bytes], str, Callable[[], None]] | None = None
        self._lock = threading.Lock()
        self.fired = threading.Event()
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, name="killing-proxy", daemon=True).start()

    def arm(self, pattern: str, when: str, action: Callable[[], None]) -> None:
        """On the next request whose bytes match ``pattern``: run ``action`` (e.g. kill the server)
        ``"before"`` forwarding it, or ``"after"`` the server started answering it."""
        if when not in ("before", "after"):
            raise ValueError(f"when must be before or after, got {when!r}")
        with self._lock:
            self.fired.clear()
            self._trigger = (re.compile(pattern.encode()), when, action)

    def retarget(self, backend_port: int) -> None:
        self.backend_port = backend_port

    def _take(self, data: bytes) -> tuple[str, Callable[[], None]] | None:
        with self._lock:
            trig = self._trigger
            if trig is None or not trig[0].search(data):
                return None
            self._trigger = None
            return trig[1], trig[2]

    def _fire(self, action: Callable[[], None]) -> None:
        try:
            action()
        finally:
            self.fired.set()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.backend_port), timeout=10)
        except OSError:
            client.close()  # the server is down: the client sees the connection drop
            return
        upstream.settimeout(None)
        self._conns += [client, upstream]
        answer_kills: list[Callable[[], None]] = []

        def close_both() -> None:
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()

        def server_to_client() -> None:
            while True:
                try:
                    data = upstream.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    break
                if answer_kills:
                    self._fire(answer_kills.pop())
                    break
                try:
                    client.sendall(data)
                except OSError:
                    break
            close_both()

        threading.Thread(target=server_to_client, daemon=True).start()
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            hit = self._take(data)
            if hit is not None and hit[0] == "before":
                self._fire(hit[1])
                break
            if hit is not None:
                answer_kills.append(hit[1])
            try:
                upstream.sendall(data)
            except OSError:
                break
        close_both()

    def close(self) -> None:
        self._stop.set()
        for s in [self.sock, *self._conns]:
            with contextlib.suppress(OSError):
                s.close()


class KillableMlflow:
    """A real MLflow server (SQLite, proxied artifacts) behind a :class:`KillingProxy`: clients use ``url``
    throughout; ``kill`` SIGKILLs the server, ``restart`` brings a new one up on the same data."""

    def __init__(self, root: Any) -> None:
        from airflow_saga.devstack.mlflow_server import MlflowServer

        self.root = root
        self.server = MlflowServer(root).start()
        self.proxy = KillingProxy(self.server.port)
        self.url = self.proxy.url

    def kill(self) -> None:
        kill_group(self.server.proc)

    def restart(self) -> None:
        from airflow_saga.devstack.mlflow_server import MlflowServer
        from airflow_saga.devstack.procs import free_port

        if self.server.proc is not None and self.server.proc.poll() is None:
            raise RuntimeError("restart() is for a killed server")
        self.server = MlflowServer(self.root, port=free_port()).start()
        self.proxy.retarget(self.server.port)

    def close(self) -> None:
        self.server.stop()
        self.proxy.close()
