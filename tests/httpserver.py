"""A loopback HTTP(S) server for tests: registered bodies, scripted faults, and hit counts per path.

``ImageServer`` binds 127.0.0.1 on an ephemeral port and answers from a thread pool, so a slow answer
does not hold the others up. Sleeps wait on the server's stop event: ``stop()`` returns at once even while
a handler is "slow". Also holds small image makers (JPEG, PNG, truncated JPEG, pixel-bomb PNG).

Fault kinds for ``add_fault(path, kind, **params)``:

* ``status``        answer ``status`` (default 404) with a short text body.
* ``fail_then_ok``  the first ``failures`` (default 1) requests get ``status`` (default 500), then ``body``.
* ``retry_after``   the first ``failures`` requests get 429 with ``Retry-After: retry_after``, then ``body``.
* ``slow``          wait ``delay`` seconds before the status line, then ``body``.
* ``stall_body``    send headers and the first ``sent`` bytes of ``body``, wait ``delay``, send the rest.
* ``short_read``    declare ``Content-Length: len(body)``, send ``sent`` bytes, close the connection.
* ``chunked``       send ``body`` with chunked transfer encoding (no Content-Length).
* ``redirect``      answer ``status`` (default 302) with ``Location: location`` (a path or a full URL).
"""

from __future__ import annotations

import io
import ssl
import struct
import threading
import zlib
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from PIL import Image

from imagequant.config import FetchConfig

FAULT_KINDS = frozenset(
    {"status", "fail_then_ok", "retry_after", "slow", "stall_body", "short_read", "chunked", "redirect"}
)


# ------------------------------------------------------------------------------------------ image makers


def tiny_jpeg(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A small, valid RGB JPEG."""
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def tiny_png(size: tuple[int, int] = (32, 32), color: tuple[int, int, int] = (30, 200, 30)) -> bytes:
    """A small, valid RGB PNG."""
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def truncated_jpeg(keep: float = 0.5) -> bytes:
    """A JPEG cut after ``keep`` of its bytes: valid header (passes a magic-byte check), undecodable body."""
    buf = io.BytesIO()
    # Noise so the entropy-coded part is long enough that cutting it loses real data.
    Image.effect_noise((256, 256), 64).convert("RGB").save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    return data[: max(64, int(len(data) * keep))]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


@cache
def pixel_bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A complete, valid 1-bit grey PNG of ``width`` x ``height`` zero pixels: ~100 KB on disk, 900 Mpx."""
    row = b"\x00" + bytes((width + 7) // 8)  # filter byte "none" + packed bits
    packer = zlib.compressobj(6)
    parts: list[bytes] = []
    block = 1000
    for start in range(0, height, block):
        parts.append(packer.compress(row * min(block, height - start)))
    parts.append(packer.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"".join(parts))
            + _png_chunk(b"IEND", b""))


HTML_PAGE = b"<!doctype html><html><head><title>Not found</title></head><body>no image here</body></html>"


# ------------------------------------------------------------------------------------------------ server


@dataclass
class _Route:
    kind: str  # "body" or one of FAULT_KINDS
    body: bytes = b""
    content_type: str = "application/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    served: int = 0  # requests answered so far (fail_then_ok / retry_after count these)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for handlers still sleeping or on keep-alive
    allow_reuse_address = True
    owner: ImageServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out and hang up are expected here; keep test output clean.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # idle keep-alive connections end on their own
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        route, served = owner._begin(path, self.headers.get("Host", ""))
        try:
            self._answer(owner, route, served)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
            self.close_connection = True
        finally:
            owner._end(path)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _answer(self, owner: ImageServer, route: _Route | None, served: int) -> None:
        if route is None:
            self._send(404, b"no such path", "text/plain")
            return
        p = route.params
        kind = route.kind
        if kind == "body":
            self._send(200, route.body, route.content_type, route.headers)
        elif kind == "status":
            self._send(int(p.get("status", 404)), p.get("text", b"error"), "text/plain")
        elif kind in ("fail_then_ok", "retry_after"):
            if served <= int(p.get("failures", 1)):
                if kind == "retry_after":
                    self._send(429, b"slow down", "text/plain", {"Retry-After": str(p.get("retry_after", 1))})
                else:
                    self._send(int(p.get("status", 500)), b"server error", "text/plain")
            else:
                self._send(200, route.body, route.content_type, route.headers)
        elif kind == "slow":
            if owner._stopping.wait(float(p.get("delay", 5.0))):
                self.close_connection = True
                return
            self._send(200, route.body, route.content_type, route.headers)
        elif kind in ("stall_body", "short_read"):
            sent = int(p.get("sent", 100))
            self.send_response(200)
            self.send_header("Content-Type", route.content_type)
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body[:sent])
            self.wfile.flush()
            if kind == "short_read" or owner._stopping.wait(float(p.get("delay", 5.0))):
                self.close_connection = True
                return
            self.wfile.write(route.body[sent:])
        elif kind == "chunked":
            self.send_response(200)
            self.send_header("Content-Type", route.content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            step = int(p.get("chunk", 16 * 1024))
            for start in range(0, len(route.body), step):
                piece = route.body[start : start + step]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif kind == "redirect":
            location = str(p["location"])
            self._send(int(p.get("status", 302)), b"moved", "text/plain", {"Location": location})
        else:  # pragma: no cover - add_fault rejects unknown kinds
            self._send(500, b"unknown fault", "text/plain")


class ImageServer:
    """Threaded HTTP server on 127.0.0.1 (ephemeral port) with registered bodies, faults and hit counts.

    ``tls=(certfile, keyfile)`` serves HTTPS instead. Use as a context manager or call start()/stop().
    """

    def __init__(self, tls: tuple[str | Path, str | Path] | None = None) -> None:
        self._routes: dict[str, _Route] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tls = tls
        self.hits: Counter[str] = Counter()
        self.host_headers: dict[str, str] = {}  # last Host header seen per path
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()  # most requests for one path answered at once

    # -- lifecycle

    def start(self) -> ImageServer:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        if self._tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self._tls[0]), str(self._tls[1]))
            httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="ImageServer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()  # wakes every sleeping handler
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- addresses

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("ImageServer is not started")
        return int(self._httpd.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        """Full URL of ``path``; ``host`` may be another name for this machine (e.g. localhost)."""
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{host}:{self.port}{path if path.startswith('/') else '/' + path}"

    # -- routes

    def add(self, path: str, body: bytes, content_type: str = "image/jpeg",
            headers: dict[str, str] | None = None) -> str:
        """Serves ``body`` at ``path`` with status 200; returns the URL."""
        with self._lock:
            self._routes[path] = _Route("body", body, content_type, dict(headers or {}))
        return self.url(path)

    def add_fault(self, path: str, kind: str, body: bytes = b"", content_type: str = "image/jpeg",
                  headers: dict[str, str] | None = None, **params: Any) -> str:
        """Serves the scripted fault ``kind`` (see the module docstring) at ``path``; returns the URL."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r} (known: {', '.join(sorted(FAULT_KINDS))})")
        if kind == "redirect" and "location" not in params:
            raise ValueError("a redirect fault needs location=...")
        with self._lock:
            self._routes[path] = _Route(kind, body, content_type, dict(headers or {}), dict(params))
        return self.url(path)

    def reset(self) -> None:
        """Forgets every route and count (a session-scoped server between tests)."""
        with self._lock:
            self._routes.clear()
            self.hits.clear()
            self.host_headers.clear()
            self.in_flight.clear()
            self.max_in_flight.clear()

    # -- bookkeeping called by the handler threads

    def _begin(self, path: str, host_header: str) -> tuple[_Route | None, int]:
        """Counts the hit; returns the route and how many requests it has had, this one included."""
        with self._lock:
            self.hits[path] += 1
            self.host_headers[path] = host_header
            self.in_flight[path] += 1
            self.max_in_flight[path] = max(self.max_in_flight[path], self.in_flight[path])
            route = self._routes.get(path)
            if route is None:
                return None, 0
            route.served += 1
            return route, route.served

    def _end(self, path: str) -> None:
        with self._lock:
            self.in_flight[path] -= 1


def fetch_config(**overrides: object) -> FetchConfig:
    """A fast fetch configuration for tests: loopback allowed (the servers are on 127.0.0.1), tiny backoff."""
    values: dict[str, object] = {
        "connect_timeout_s": 2.0,
        "read_timeout_s": 2.0,
        "max_retries": 2,
        "backoff_s": 0.01,
        "max_backoff_s": 0.05,
        "max_retry_after_s": 2.0,
        "max_bytes": 200_000,
        "max_redirects": 3,
        "pool_size": 4,
        "per_host_concurrency": 4,
        "allow_loopback": True,
    }
    values.update(overrides)
    return FetchConfig(**values)  # type: ignore[arg-type]
