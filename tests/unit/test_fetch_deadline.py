"""Every fetch ends by its deadline, whatever the server does: servers that trickle headers or body bytes
just inside the read timeout, slow redirect chains, and retries of all of them.

A raw socket server on 127.0.0.1 plays the hostile server (http.server cannot trickle a status line). Each
scenario trickles for longer than the bound under test, so a fetch that only stops when the server does
fails the time assertion instead of hanging the suite.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from imagequant.config import FetchConfig
from imagequant.fetch import fetch_image
from tests.httpserver import fetch_config, tiny_jpeg

JPEG = tiny_jpeg()
STEP = 0.2  # seconds between trickled bytes: well inside the 0.5 s read timeout
TRICKLE_FOR = 6.0  # how long the server keeps trickling: far past every bound asserted below
MARGIN = 1.0  # scheduling slack on a busy machine


def make_cfg(**overrides: object) -> FetchConfig:
    """Short timeouts, no retries unless asked: every bound below is a second or two."""
    return fetch_config(**{"connect_timeout_s": 0.5, "read_timeout_s": 0.5, "max_retries": 0, "backoff_s": 0.01,
                           "max_backoff_s": 0.02, "max_retry_after_s": 0.1, "max_bytes": 1_000_000,
                           "max_redirects": 5, **overrides})


class TrickleServer:
    """Answers each path with a scripted, possibly hostile, byte sequence; counts requests per path."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.hits: dict[str, int] = {}
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket, data: bytes) -> None:
        """Sends ``data`` one byte per STEP for at most TRICKLE_FOR seconds."""
        end = time.monotonic() + TRICKLE_FOR
        for i in range(len(data)):
            if time.monotonic() > end or self.stop.wait(STEP):
                return
            conn.sendall(data[i : i + 1])

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            request = b""
            while b"\r\n\r\n" not in request:
                piece = conn.recv(4096)
                if not piece:
                    return
                request += piece
            path = request.split(b" ", 2)[1].decode()
            self.hits[path] = self.hits.get(path, 0) + 1
            self._answer(conn, path)
        except OSError:
            pass
        finally:
            conn.close()

    def _answer(self, conn: socket.socket, path: str) -> None:
        body = JPEG + bytes(200)
        if path == "/trickle-body.jpg":  # honest headers, then the body a byte at a time
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode())
            self._trickle(conn, body)
        elif path == "/trickle-close.jpg":  # no length: the body ends when the server closes
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nConnection: close\r\n\r\n" + JPEG[:64])
            self._trickle(conn, body[64:])
        elif path == "/trickle-status.jpg":  # the status line itself a byte at a time
            self._trickle(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789")
        elif path == "/trickle-headers.jpg":  # a status line, then an endless header
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nX-Padding: ")
            self._trickle(conn, b"a" * 1000)
        elif path.startswith("/hop"):  # each hop of a redirect chain answers just inside the read timeout
            n = int(path[4:])
            if self.stop.wait(0.4):
                return
            conn.sendall(f"HTTP/1.1 302 Found\r\nLocation: /hop{n + 1}\r\nContent-Length: 0\r\n\r\n".encode())
        else:
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture
def trickle() -> Iterator[TrickleServer]:
    server = TrickleServer()
    yield server
    server.close()


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    started = time.monotonic()
    out = fn()
    return out, time.monotonic() - started


@pytest.mark.parametrize("path", ["/trickle-body.jpg", "/trickle-close.jpg", "/trickle-status.jpg",
                                  "/trickle-headers.jpg"])
def test_one_attempt_ends_within_connect_plus_read_timeout(trickle: TrickleServer, path: str) -> None:
    cfg = make_cfg()
    result, seconds = timed(lambda: fetch_image(trickle.url(path), cfg))
    assert seconds < cfg.connect_timeout_s + cfg.read_timeout_s + MARGIN, seconds
    assert not result.ok and result.error_kind == "timeout", (result.error_kind, result.message)  # type: ignore[attr-defined]
    assert result.data is None  # type: ignore[attr-defined]


def test_retries_of_a_trickling_server_end_within_the_attempts_total(trickle: TrickleServer) -> None:
    cfg = make_cfg(max_retries=2)
    result, seconds = timed(lambda: fetch_image(trickle.url("/trickle-body.jpg"), cfg))
    attempts = cfg.max_retries + 1
    assert seconds < attempts * (cfg.connect_timeout_s + cfg.read_timeout_s) + MARGIN, seconds
    assert result.error_kind == "timeout"  # type: ignore[attr-defined]
    assert 2 <= trickle.hits["/trickle-body.jpg"] <= attempts


def test_slow_redirect_chain_ends_within_the_fetch_budget(trickle: TrickleServer) -> None:
    # Five hops of 0.4 s each would take 2 s; one attempt's budget is 1 s.
    cfg = make_cfg()
    result, seconds = timed(lambda: fetch_image(trickle.url("/hop0"), cfg))
    assert seconds < cfg.connect_timeout_s + cfg.read_timeout_s + MARGIN, seconds
    assert result.error_kind == "timeout", result.message  # type: ignore[attr-defined]
