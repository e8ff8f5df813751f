"""Image fetching over HTTP(S) for catalog image links.

One pooled ``requests.Session`` per worker process; bounded retries with exponential backoff on timeouts,
connection errors, 429 and 5xx; a hard cap on body size; a magic-byte check that the body is an image
(decoding happens later, in ``imagequant.imaging``); redirects followed by hand so that every hop is checked.

Safe fetching (on by default): only the allowed schemes, and every address a host resolves to is checked
before any connection is made. Loopback, private, shared (CGNAT), link-local, multicast, unspecified,
reserved and cloud-metadata addresses are refused unless the configuration allows them.

The check is made twice, for two reasons:

* ``check_url`` (called before each request) gives a clear ``refused_address`` answer up front and is what
  the unit tests exercise without sockets;
* the connection classes mounted on the session resolve the host again *at connect time*, check every
  address, and connect only to those same checked addresses (the Host header, TLS SNI and certificate
  check still use the host name). So a DNS answer that changes between the check and the connection
  (DNS rebinding) cannot make us connect to a refused address. Environment proxies are ignored
  (``trust_env = False``) and explicit proxies are rejected, since a proxy would connect on our behalf.

Residual risk: a reused keep-alive connection goes to the address checked when it was opened; that is the
address the name pointed to then, which was allowed.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import http.cookiejar
import ipaddress
import logging
import os
import random
import re
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError, ReadTimeoutError
from urllib3.exceptions import HTTPError as Urllib3HTTPError
from urllib3.util import connection as urllib3_connection

from imagequant.config import FetchConfig

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Every error_kind a FetchResult may carry.
ERROR_KINDS = frozenset(
    {
        "bad_link",  # not a usable URL (empty, not text, no host, bad port)
        "bad_scheme",  # scheme not in allowed_schemes (ftp:, file:, javascript:...)
        "refused_address",  # the host resolves to an address that safe fetching refuses
        "dns",  # the host name does not resolve
        "timeout",  # connect or read timeout, or the body took too long overall
        "connection",  # connection refused/reset, body cut short
        "tls",  # TLS handshake or certificate failure (not retried)
        "http_status",  # a non-2xx answer (status_code holds it); 429/5xx only after the retries
        "too_large",  # body bigger than max_bytes (by Content-Length or by counting)
        "not_image",  # empty body or one whose first bytes are not a known image format
        "redirect_loop",  # a redirect back to a URL already visited
        "too_many_redirects",  # more than max_redirects hops
        "bad_redirect",  # a 3xx without a usable Location
    }
)

# Cloud instance-metadata endpoints: refused even when private/link-local addresses are allowed, unless
# the host is named in allowed_hosts.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.170.23",  # AWS EKS pod identity agent
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS EKS pod identity agent over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (classic)
    )
)
METADATA_HOSTNAMES = frozenset(
    {"metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"}
)
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix: embeds an IPv4 address

_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
# 5xx answers worth another try; 501 Not Implemented and 505 Version Not Supported never get better.
_NO_RETRY_5XX = frozenset({501, 505})
_CHUNK = 64 * 1024
_MAGIC_LEN = 12
_DRAIN_LIMIT = 64 * 1024


# ----------------------------------------------------------------------------------------------- results


@dataclass
class FetchResult:
    """What one fetch (or cache lookup) gave. ``data`` is set only when ``ok``."""

    ok: bool
    data: bytes | None
    status_code: int | None
    error_kind: str | None
    message: str
    attempts: int
    seconds: float
    source: str = "http"  # "http", "cache" (saved for this link) or "plain_file" (user-placed, see fetch_or_load)
    final_url: str = ""  # the URL that gave the answer, after redirects


@dataclass
class _Outcome:
    """One try at one URL."""

    ok: bool = False
    data: bytes | None = None
    status: int | None = None
    kind: str | None = None
    message: str = ""
    retryable: bool = False
    retry_after: float | None = None
    location: str | None = None
    counted: bool = True  # False when refused before any network work


def _fail(kind: str, message: str, *, retryable: bool = False, status: int | None = None,
          retry_after: float | None = None, counted: bool = True) -> _Outcome:
    return _Outcome(kind=kind, message=message, retryable=retryable, status=status,
                    retry_after=retry_after, counted=counted)


# --------------------------------------------------------------------------------------- address policy


class RefusedAddress(Exception):
    """Raised by the session's connection classes when a host resolves to a refused address.

    Deliberately not an OSError, so urllib3 and requests pass it through unwrapped and unretried.
    """


def _normalize_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _unwrap(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4), else the address itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
    return ip


@dataclass(frozen=True)
class AddressPolicy:
    """Which hosts and addresses may be contacted; hashable so sessions can be cached per policy."""

    allow_loopback: bool = False
    allow_private: bool = False
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    allowed_schemes: frozenset[str] = frozenset({"http", "https"})

    @classmethod
    def from_config(cls, cfg: FetchConfig) -> AddressPolicy:
        return cls(
            allow_loopback=cfg.allow_loopback,
            allow_private=cfg.allow_private,
            allowed_hosts=frozenset(_normalize_host(h) for h in cfg.allowed_hosts),
            allowed_schemes=frozenset(s.lower() for s in cfg.allowed_schemes),
        )

    def host_allowed(self, host: str) -> bool:
        """True when the host is named in allowed_hosts, which bypasses the address checks."""
        return _normalize_host(host) in self.allowed_hosts

    def refusal(self, ip: IPAddress) -> str | None:
        """None when the address may be contacted, else why not."""
        inner = _unwrap(ip)
        shown = str(ip) if inner == ip else f"{ip} (= {inner})"
        if ip in METADATA_ADDRESSES or inner in METADATA_ADDRESSES:
            return f"{shown} is a cloud metadata address"
        if inner.is_unspecified:
            return f"{shown} is an unspecified address"
        if inner.is_multicast:
            return f"{shown} is a multicast address"
        if inner.is_loopback:
            return None if self.allow_loopback else f"{shown} is a loopback address"
        if inner.is_link_local:
            return None if self.allow_private else f"{shown} is a link-local address"
        if inner in _SHARED_ADDRESS_SPACE:
            return None if self.allow_private else f"{shown} is a private (shared, RFC 6598) address"
        if inner.is_reserved:
            return f"{shown} is a reserved address"
        if inner.is_private or (isinstance(inner, ipaddress.IPv6Address) and inner.is_site_local):
            return None if self.allow_private else f"{shown} is a private address"
        if not inner.is_global:
            return None if self.allow_private else f"{shown} is not a global address"
        return None


def _literal_ip(host: str) -> IPAddress | None:
    """The address when ``host`` is an IP literal in canonical form (zone id dropped), else None."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _resolve(host: str, port: int) -> list[tuple[int, str, IPAddress]]:
    """(family, address text to connect to, parsed address) for every TCP address of ``host``.

    Raises socket.gaierror when the name does not resolve. Module-level so a test can stand in for a DNS
    server that changes its answer (rebinding).
    """
    out: list[tuple[int, str, IPAddress]] = []
    for family, _type, _proto, _canon, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        text = str(sockaddr[0])
        out.append((family, text, ipaddress.ip_address(text.split("%", 1)[0])))
    return out


def _check(url: str, policy: AddressPolicy) -> _Outcome | None:
    """Scheme, host and address checks for one URL; None when it may be fetched."""
    if not isinstance(url, str) or not url.strip():
        return _fail("bad_link", f"not a URL: {url!r}", counted=False)
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        return _fail("bad_link", f"not a usable URL: {exc}", counted=False)
    scheme = parts.scheme.lower()
    if scheme not in policy.allowed_schemes:
        shown = scheme or "(none)"
        return _fail("bad_scheme", f"scheme {shown} is not allowed (allowed: {', '.join(sorted(policy.allowed_schemes))})",
                     counted=False)
    host = _normalize_host(parts.hostname or "")
    if not host:
        return _fail("bad_link", f"URL has no host: {url!r}", counted=False)
    if policy.host_allowed(host):
        return None
    if host in METADATA_HOSTNAMES:
        return _fail("refused_address", f"{host} is a cloud metadata host name", counted=False)
    literal = _literal_ip(host)
    if literal is not None:
        reason = policy.refusal(literal)
        return _fail("refused_address", reason, counted=False) if reason else None
    try:
        addresses = _resolve(host, port or (443 if scheme == "https" else 80))
    except UnicodeError as exc:
        return _fail("bad_link", f"host name {host!r} is not valid: {exc}", counted=False)
    except socket.gaierror as exc:
        # Only "try again" is transient; "no such name" will not change within our retries.
        return _fail("dns", f"cannot resolve {host}: {exc.strerror or exc}", retryable=exc.errno == socket.EAI_AGAIN)
    if not addresses:
        return _fail("dns", f"{host} has no IPv4 or IPv6 address")
    for _family, _text, ip in addresses:
        reason = policy.refusal(ip)
        if reason:
            return _fail("refused_address", f"{host} resolves to {reason}", counted=False)
    return None


def check_url(url: str, cfg: FetchConfig) -> str | None:
    """None when safe fetching allows ``url``, else the reason it is refused. Never opens a connection.

    Host names are resolved (as the fetch would); IP literals are decided without resolving.
    """
    outcome = _check(url, AddressPolicy.from_config(cfg))
    return None if outcome is None else outcome.message


# ---------------------------------------------------------------------------------- attempt deadline

# The watchdog of the attempt running in this thread; the connection classes below hand it their sockets.
_WATCH = threading.local()


class _AttemptWatchdog:
    """Ends one attempt at its deadline, whatever the server does.

    Read timeouts apply per receive, so a server that sends one byte a second (in the headers or the
    body) never lets one expire. At the deadline this shuts the attempt's socket down, which wakes any
    blocked connect, TLS handshake, header or body read at once; the attempt then reports ``timeout``.
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.fired = False
        self._finished = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def watch(self, sock: Any) -> None:
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            if self._finished:
                return
            self._sockets.append(sock)
            if self.fired:
                _shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self.fired = True
            for sock in self._sockets:
                _shutdown(sock)

    def __enter__(self) -> _AttemptWatchdog:
        _WATCH.current = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        with self._lock:
            self._finished = True  # from here on the sockets may go back to the pool untouched
            self._sockets.clear()
        _WATCH.current = None


def _shutdown(sock: socket.socket) -> None:
    # The plain socket's shutdown, also for an SSLSocket: it only ends the stream (whose reader then sees
    # end of file or an error) and leaves the SSL object to the thread that is using it.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _current_watchdog() -> _AttemptWatchdog | None:
    return getattr(_WATCH, "current", None)


# ------------------------------------------------------------------------------- pinned connections


class _CheckedConnectMixin:
    """Resolves at connect time, checks every address, and connects only to those checked addresses."""

    address_policy: AddressPolicy = AddressPolicy()

    # Attributes that urllib3's HTTPConnection provides.
    host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any
    _dns_host: str

    def _new_conn(self) -> socket.socket:
        host = self._dns_host.strip("[]")
        try:
            addresses = _resolve(host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        if not self.address_policy.host_allowed(host):
            if _normalize_host(host) in METADATA_HOSTNAMES:
                raise RefusedAddress(f"{host} is a cloud metadata host name")
            for _family, _text, ip in addresses:
                reason = self.address_policy.refusal(ip)
                if reason:
                    raise RefusedAddress(f"{host} resolves to {reason}")
        last_error: OSError | None = None
        watchdog = _current_watchdog()
        for _family, text, _ip in addresses:
            timeout = self.timeout
            if watchdog is not None:
                # Each address gets the connect timeout, but never past the attempt's deadline.
                remaining = watchdog.remaining()
                if remaining <= 0:
                    raise ConnectTimeoutError(self, f"Connection to {self.host} timed out (attempt deadline)")
                timeout = min(timeout, remaining) if isinstance(timeout, (int, float)) else remaining
            try:
                # A numeric host: urllib3's create_connection does no DNS lookup of its own here.
                sock = urllib3_connection.create_connection(
                    (text, self.port), timeout, source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except OSError as exc:
                last_error = exc
                continue
            if watchdog is not None:
                watchdog.watch(sock)  # from here the TLS handshake is bounded too
            sys.audit("http.client.connect", self, self.host, self.port)
            return sock
        if isinstance(last_error, socket.timeout):
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})")
        raise NewConnectionError(self, f"Failed to establish a new connection: {last_error or 'no address'}")  # type: ignore[arg-type]

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        # A pooled connection was opened by an earlier attempt: hand its socket to this attempt's watchdog
        # before the status line and headers are read.
        watchdog = _current_watchdog()
        if watchdog is not None:
            watchdog.watch(getattr(self, "sock", None))
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


@cache
def _pool_classes(policy: AddressPolicy) -> tuple[type[HTTPConnectionPool], type[HTTPSConnectionPool]]:
    """urllib3 pool classes whose connections apply ``policy`` (one pair per policy)."""
    http_conn = type("CheckedHTTPConnection", (_CheckedConnectMixin, HTTPConnection), {"address_policy": policy})
    https_conn = type("CheckedHTTPSConnection", (_CheckedConnectMixin, HTTPSConnection), {"address_policy": policy})
    http_pool = type("CheckedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn})
    https_pool = type("CheckedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn})
    return http_pool, https_pool


class CheckedAdapter(HTTPAdapter):
    """HTTPAdapter whose connections check (and pin) the addresses they connect to; no retries, no proxies."""

    def __init__(self, policy: AddressPolicy, pool_size: int) -> None:
        self.address_policy = policy  # set first: HTTPAdapter.__init__ calls init_poolmanager
        super().__init__(pool_connections=32, pool_maxsize=max(1, pool_size), max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)
        http_pool, https_pool = _pool_classes(self.address_policy)
        self.poolmanager.pool_classes_by_scheme = {"http": http_pool, "https": https_pool}

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        raise RefusedAddress("proxies are not supported by the safe fetcher (the proxy would skip the address checks)")


# ----------------------------------------------------------------------------- sessions and semaphores

_SESSIONS: dict[tuple[Any, ...], requests.Session] = {}
_SEMAPHORES: dict[tuple[int, str, int], threading.BoundedSemaphore] = {}
_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    """A forked child starts with no sessions or semaphores, and a lock no parent thread can be holding."""
    global _LOCK
    _LOCK = threading.Lock()
    _SESSIONS.clear()
    _SEMAPHORES.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _session_key(cfg: FetchConfig) -> tuple[Any, ...]:
    return (os.getpid(), AddressPolicy.from_config(cfg), max(1, cfg.pool_size), cfg.user_agent)


class NoRedirectSession(requests.Session):
    """A Session that never follows redirects itself: fetch_image follows them hop by hop, checking each.

    requests' own redirect machinery also reads the whole redirect body into memory (unbounded), even
    with ``allow_redirects=False``, when it prepares ``Response.next``; overriding it avoids that too.
    """

    def resolve_redirects(self, *args: Any, **kwargs: Any) -> Iterator[Any]:  # type: ignore[override]
        return iter(())


def new_session(cfg: FetchConfig) -> requests.Session:
    """A fresh session with the checked adapter; most callers want the shared ``get_session``."""
    session = NoRedirectSession()
    # No environment proxies or .netrc: a proxy would connect on our behalf, past the address checks.
    session.trust_env = False
    # No cookies: images need none, and a shared session must carry no state between hosts or threads.
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    session.headers.update(
        {"User-Agent": cfg.user_agent, "Accept": "image/*,*/*;q=0.5", "Accept-Encoding": "identity"}
    )
    adapter = CheckedAdapter(AddressPolicy.from_config(cfg), cfg.pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def get_session(cfg: FetchConfig) -> requests.Session:
    """The one pooled session of this process for this configuration (a forked child gets its own)."""
    key = _session_key(cfg)
    with _LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            pid = os.getpid()
            for stale in [k for k in _SESSIONS if k[0] != pid]:
                del _SESSIONS[stale]  # inherited from a parent process: its sockets are not ours
            session = _SESSIONS[key] = new_session(cfg)
        return session


def _host_semaphore(host_key: str, size: int) -> threading.BoundedSemaphore:
    """The per-host concurrency limit of this process."""
    key = (os.getpid(), host_key, max(1, size))
    with _LOCK:
        sem = _SEMAPHORES.get(key)
        if sem is None:
            sem = _SEMAPHORES[key] = threading.BoundedSemaphore(key[2])
        return sem


# ------------------------------------------------------------------------------------- small helpers


def image_format(data: bytes) -> str | None:
    """The image format named by the first bytes (jpeg, png, gif, webp, bmp, tiff), or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM" and len(data) >= 14:
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None when absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(cfg: FetchConfig, url: str, retry_index: int, retry_after: float | None = None) -> float:
    """Seconds to sleep before retry number ``retry_index`` (0-based).

    A server's Retry-After wins (capped at max_retry_after_s). Otherwise backoff_s * 2**i plus up to 25 %
    jitter, capped at max_backoff_s. The jitter comes from a generator seeded by the URL and try number:
    repeatable, yet different URLs that failed together do not retry in lockstep.
    """
    if retry_after is not None:
        return min(max(0.0, retry_after), cfg.max_retry_after_s)
    base = cfg.backoff_s * (2**retry_index)
    jitter = random.Random(f"{url}#{retry_index}").uniform(0.0, 0.25)
    return max(0.0, min(cfg.max_backoff_s, base * (1.0 + jitter)))


def _loop_key(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", parts.query, ""))


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception with its args, causes and contexts: requests wraps urllib3 errors in layers."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        item = todo.pop()
        if any(item is s for s in seen):
            continue
        seen.append(item)
        todo.extend(a for a in getattr(item, "args", ()) if isinstance(a, BaseException))
        reason = getattr(item, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)
        for linked in (item.__cause__, item.__context__):
            if linked is not None:
                todo.append(linked)
    return seen


def _drain(response: requests.Response) -> None:
    """Reads a small error/redirect body so the connection can go back to the pool."""
    try:
        length = int(response.headers.get("Content-Length", "-1"))
        if 0 <= length <= _DRAIN_LIMIT:
            response.raw.read(length)
    except (ValueError, OSError, requests.RequestException, ReadTimeoutError):
        pass


# ------------------------------------------------------------------------------------------- fetching


def _classify(exc: BaseException) -> _Outcome:
    """Maps a requests/urllib3 exception to an outcome."""
    chain = _chain(exc)
    if any(isinstance(e, RefusedAddress) for e in chain):
        return _fail("refused_address", str(next(e for e in chain if isinstance(e, RefusedAddress))))
    if isinstance(exc, requests.exceptions.SSLError):
        return _fail("tls", f"TLS failure: {exc}")
    # urllib3's NewConnectionError subclasses ConnectTimeoutError (history), yet means "refused/unreachable".
    if isinstance(exc, requests.exceptions.Timeout) or any(
        isinstance(e, (ReadTimeoutError, ConnectTimeoutError, socket.timeout)) and not isinstance(e, NewConnectionError)
        for e in chain
    ):
        return _fail("timeout", f"timed out: {exc}", retryable=True)
    if any(isinstance(e, NameResolutionError) for e in chain):
        return _fail("dns", f"cannot resolve host: {exc}")
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                        requests.exceptions.MissingSchema, requests.exceptions.InvalidHeader)):
        return _fail("bad_link", f"not a usable URL: {exc}")
    if isinstance(exc, requests.exceptions.ContentDecodingError):
        return _fail("connection", f"body could not be decoded: {exc}")
    return _fail("connection", f"connection failed: {exc}", retryable=True)


def _read_body(response: requests.Response, cfg: FetchConfig, deadline: float) -> _Outcome:
    """Streams a 2xx body, enforcing max_bytes, the attempt's deadline and the image magic bytes.

    The watchdog ends a read that is still blocked at the deadline; the check between chunks is for a
    session whose connections the watchdog does not know."""
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > cfg.max_bytes:
        return _fail("too_large", f"Content-Length {int(declared)} exceeds max_bytes {cfg.max_bytes}",
                     status=response.status_code)
    body = bytearray()
    checked = False
    for chunk in response.iter_content(chunk_size=_CHUNK):
        body += chunk
        if len(body) > cfg.max_bytes:
            return _fail("too_large", f"body exceeds max_bytes {cfg.max_bytes}", status=response.status_code)
        if not checked and len(body) >= _MAGIC_LEN:
            checked = True
            if image_format(bytes(body[:_MAGIC_LEN])) is None:
                break  # not an image: stop downloading now
        if time.monotonic() > deadline:
            return _fail("timeout", "body took too long to arrive", retryable=True, status=response.status_code)
    data = bytes(body)
    if not data:
        return _fail("not_image", "empty body", status=response.status_code)
    if image_format(data) is None:
        ctype = response.headers.get("Content-Type", "?")
        return _fail("not_image", f"body is not an image (Content-Type {ctype}, starts {data[:16]!r})",
                     status=response.status_code)
    return _Outcome(ok=True, data=data, status=response.status_code, message=f"{len(data)} bytes")


def _attempt_timeout(cfg: FetchConfig) -> float:
    """The longest one attempt may take, from its start to its last body byte."""
    return cfg.connect_timeout_s + cfg.read_timeout_s


def _fetch_budget(cfg: FetchConfig) -> float:
    """The longest one image may take over all its attempts (retries and redirect hops together)."""
    return (max(0, cfg.max_retries) + 1) * _attempt_timeout(cfg)


def _deadline_passed(what: str) -> _Outcome:
    return _fail("timeout", f"{what}: the fetch ran out of time", retryable=False)


def _try_once(url: str, cfg: FetchConfig, policy: AddressPolicy, session: requests.Session,
              budget_end: float | None = None) -> _Outcome:
    """One request for one URL: checks, then the request under the per-host limit, all within one attempt's
    time (connect + read timeout) and never past ``budget_end`` (the whole fetch's deadline)."""
    refused = _check(url, policy)
    if refused is not None:
        return refused
    parts = urlsplit(url)
    host_key = f"{_normalize_host(parts.hostname or '')}:{parts.port or parts.scheme}"
    semaphore = _host_semaphore(host_key, cfg.per_host_concurrency)
    wait = None if budget_end is None else budget_end - time.monotonic()
    if wait is not None and (wait <= 0 or not semaphore.acquire(timeout=wait)):
        return _deadline_passed("waiting for a connection slot to the host")
    if wait is None:
        semaphore.acquire()
    try:
        deadline = time.monotonic() + _attempt_timeout(cfg)
        if budget_end is not None:
            deadline = min(deadline, budget_end)
        with _AttemptWatchdog(deadline) as watchdog:
            outcome = _request(url, cfg, session, deadline)
            if watchdog.fired and outcome.location is None and outcome.kind not in ("timeout", "http_status"):
                # Whatever the cut-off read looked like (end of file, reset, a short body), it was the deadline.
                return _fail("timeout", f"no complete answer within {_attempt_timeout(cfg):g} s "
                             "(connect + read timeout)", retryable=True, status=outcome.status)
            return outcome
    finally:
        semaphore.release()


def _request(url: str, cfg: FetchConfig, session: requests.Session, deadline: float) -> _Outcome:
    """The request itself and its answer (redirect, status or body) as an outcome."""
    try:
        response = session.get(url, stream=True, allow_redirects=False,
                               timeout=(cfg.connect_timeout_s, cfg.read_timeout_s))
    except RefusedAddress as exc:
        return _fail("refused_address", str(exc))
    except (requests.RequestException, Urllib3HTTPError, ValueError, OSError) as exc:
        return _classify(exc)
    try:
        status = response.status_code
        if status in _REDIRECT_CODES:
            location = response.headers.get("Location", "").strip()
            if not location:
                return _fail("bad_redirect", f"HTTP {status} without a Location header", status=status)
            _drain(response)
            return _Outcome(status=status, location=location, message=f"HTTP {status} to {location}")
        if status == 429 or (500 <= status <= 599 and status not in _NO_RETRY_5XX):
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            _drain(response)
            return _fail("http_status", f"HTTP {status} {response.reason or ''}".strip(), status=status,
                         retryable=True, retry_after=retry_after)
        if not 200 <= status <= 299:
            _drain(response)
            return _fail("http_status", f"HTTP {status} {response.reason or ''}".strip(), status=status)
        try:
            return _read_body(response, cfg, deadline)
        except (requests.RequestException, Urllib3HTTPError, OSError) as exc:
            outcome = _classify(exc)
            outcome.status = status
            return outcome
    finally:
        response.close()


def _fetch_hop(url: str, cfg: FetchConfig, policy: AddressPolicy, session: requests.Session,
               budget_end: float | None = None) -> tuple[_Outcome, int]:
    """One URL with bounded retries; returns the last outcome and the number of tries counted."""
    tries = 0
    for retry in range(max(0, cfg.max_retries) + 1):
        outcome = _try_once(url, cfg, policy, session, budget_end)
        tries += 1 if outcome.counted else 0
        if not outcome.retryable or retry >= cfg.max_retries:
            if tries > 1 and not outcome.ok and outcome.location is None:
                outcome.message += f" (gave up after {tries} attempts)"
            return outcome, tries
        delay = backoff_delay(cfg, url, retry, outcome.retry_after)
        if budget_end is not None and time.monotonic() + delay >= budget_end:
            # Sleeping would use up the fetch's time: the last answer stands.
            outcome.message += f" (gave up after {tries} attempts: no time left for another)"
            return outcome, tries
        log.debug("retrying %s in %.2fs after %s: %s", url, delay, outcome.kind, outcome.message)
        time.sleep(delay)
    raise AssertionError("unreachable")  # the loop always returns on its last pass


def fetch_image(url: str, cfg: FetchConfig, session: requests.Session | None = None) -> FetchResult:
    """Downloads one image with safe-fetch checks, retries, size cap and manual, checked redirects.

    Never raises for network or content problems: they come back as a FetchResult with ok=False. One
    attempt ends within connect + read timeout, the whole fetch (retries, backoff and redirect hops) within
    (max_retries + 1) attempts' time; past either it is a ``timeout``.
    """
    started = time.monotonic()
    budget_end = started + _fetch_budget(cfg)
    policy = AddressPolicy.from_config(cfg)
    session = session if session is not None else get_session(cfg)
    attempts = 0
    current = url.strip() if isinstance(url, str) else url
    seen: set[str] = set()
    redirects = 0

    def done(outcome: _Outcome, final: Any) -> FetchResult:
        return FetchResult(ok=outcome.ok, data=outcome.data if outcome.ok else None, status_code=outcome.status,
                           error_kind=None if outcome.ok else outcome.kind, message=outcome.message,
                           attempts=attempts, seconds=time.monotonic() - started, source="http",
                           final_url=final if isinstance(final, str) else "")

    while True:
        if time.monotonic() >= budget_end:
            return done(_deadline_passed(f"after {redirects} redirects"), current)
        outcome, tries = _fetch_hop(current, cfg, policy, session, budget_end)
        attempts += tries
        if outcome.location is None:
            return done(outcome, current)
        seen.add(_loop_key(current))
        try:
            target = urljoin(current, outcome.location)
        except ValueError as exc:
            return done(_fail("bad_redirect", f"unusable Location {outcome.location!r}: {exc}", status=outcome.status),
                        current)
        if _loop_key(target) in seen:
            return done(_fail("redirect_loop", f"redirect loop: {current} -> {target}", status=outcome.status),
                        current)
        redirects += 1
        if redirects > cfg.max_redirects:
            return done(_fail("too_many_redirects", f"more than {cfg.max_redirects} redirects", status=outcome.status),
                        current)
        current = target


# ------------------------------------------------------------------------------------ images_dir cache

# FetchResult.source of an image read from a user-placed file named by the link's plain file name.
PLAIN_FILE_SOURCE = "plain_file"

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
_SAFE_SUFFIX = re.compile(r"\.[a-z0-9]{1,5}")


def _link_basename(text: str) -> str:
    try:
        path = urlsplit(text.strip()).path
    except ValueError:
        path = ""
    return unquote(path.rsplit("/", 1)[-1])


def _suffix_of(base: str) -> str:
    suffix = os.path.splitext(base)[1].lower()
    return suffix if _SAFE_SUFFIX.fullmatch(suffix) else ".img"


def image_file_name(url: str) -> str:
    """The readable file name of an image link, the layout the challenge's downloader writes: the URL
    path's basename when it is a plain, safe name (``.../images/I/61I9XdN6OFL.jpg`` -> ``61I9XdN6OFL.jpg``),
    else ``url-<sha256 prefix><suffix>``. Links that differ only in host or query share it, so the job only
    reads such files (placed by the user), never writes them: see ``cache_file_name``."""
    text = url if isinstance(url, str) else repr(url)
    base = _link_basename(text)
    if _SAFE_NAME.fullmatch(base):
        return base
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"url-{digest}{_suffix_of(base)}"


def cache_file_name(url: str) -> str:
    """The file name under which ``fetch_or_load`` saves a downloaded image: the readable stem, ``~`` and
    24 hex digits of the SHA-256 of the whole link (``61I9XdN6OFL~<digest>.jpg``), so two different links
    never share a file. ``~`` never occurs in an ``image_file_name``, so a saved file is never taken for a
    user-placed one, and no crafted link's plain basename can name another link's saved file."""
    text = (url if isinstance(url, str) else repr(url)).strip()
    base = _link_basename(text)
    stem = os.path.splitext(base)[0] if _SAFE_NAME.fullmatch(base) else "url"
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return f"{stem[:100] or 'url'}~{digest}{_suffix_of(base)}"


def cached_image_paths(url: str, images_dir: Path | str, plain_file: bool = True) -> list[Path]:
    """Where an image link may already be in ``images_dir``, in lookup order: the file the job saved for
    exactly this link, then (with ``plain_file``) the readable name a user may have placed there (the
    downloader's layout)."""
    folder = Path(images_dir)
    saved = folder / cache_file_name(url)
    return [saved, folder / image_file_name(url)] if plain_file else [saved]


def find_cached_image(url: str, images_dir: Path | str) -> Path | None:
    """The first file of ``cached_image_paths`` that exists, or None."""
    return next((p for p in cached_image_paths(url, images_dir) if p.is_file()), None)


def plain_names_unique(links: Sequence[str]) -> list[bool]:
    """For each link, whether no other distinct link of ``links`` has its plain file name
    (``image_file_name``): only then can a user-placed file of that name be this link's image and no other's
    (``…/q.jpg?id=1`` and ``…/q.jpg?id=2``, or one path on two hosts, share ``q.jpg``)."""
    names = {link: image_file_name(link) for link in dict.fromkeys(links)}
    counts = Counter(names.values())
    return [counts[names[link]] == 1 for link in links]


def _write_atomic(path: Path, data: bytes) -> None:
    """Writes to a temporary file in the same folder, then renames: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def fetch_or_load(url: str, cfg: FetchConfig, images_dir: Path | str | None,
                  session: requests.Session | None = None, plain_file: bool = False) -> FetchResult:
    """The image from ``images_dir`` when it is already there, else fetched and saved there.

    Lookup: the file saved for exactly this link (``cache_file_name``, source ``cache``), then, only with
    ``plain_file`` (the caller knows no other link has that name: ``plain_names_unique``), a user-placed file
    named by the link's basename (``image_file_name``, source ``plain_file``). Downloads are saved under
    ``cache_file_name`` only, so one link's bytes are never served for another. A file that does not look
    like an image is ignored (a saved one is replaced). Failures are never cached.
    """
    started = time.monotonic()
    target: Path | None = None
    not_images: list[str] = []
    if images_dir is not None and isinstance(url, str) and url.strip():
        candidates = cached_image_paths(url, images_dir, plain_file)
        target = candidates[0]
        for path in candidates:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot read cached image %s: %s", path, exc)
                continue
            if image_format(data) is not None:
                return FetchResult(ok=True, data=data, status_code=None, error_kind=None,
                                   message=f"{len(data)} bytes from {path}", attempts=0,
                                   seconds=time.monotonic() - started,
                                   source="cache" if path == target else PLAIN_FILE_SOURCE, final_url=url)
            not_images.append(path.name)
    result = fetch_image(url, cfg, session)
    if not_images:  # said, so that a failed fetch does not hide a file the user placed for this link
        result.message += f" (fetched: {', '.join(not_images)} in the images folder is not an image)"
    if result.ok and target is not None and result.data is not None:
        try:
            _write_atomic(target, result.data)
        except OSError as exc:
            # The image is still good for this run; only the cache missed it.
            log.warning("cannot save image to %s: %s", target, exc)
            result.message += f" (not saved: {exc})"
    return result
