"""Image fetching against a real loopback HTTP server: faults, retries, limits, redirects, safe fetching.

Only 127.0.0.1 / localhost is ever connected to. Refused addresses are decided before any connection
(check_url / the connect-time check), so the non-loopback literals below never see a packet.
"""

from __future__ import annotations

import email.utils
import io
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from imagequant import fetch
from imagequant.config import FetchConfig
from imagequant.fetch import (
    FetchResult,
    RefusedAddress,
    backoff_delay,
    cache_file_name,
    check_url,
    fetch_image,
    fetch_or_load,
    get_session,
    image_file_name,
    image_format,
    parse_retry_after,
)
from tests.httpserver import (
    HTML_PAGE,
    ImageServer,
    fetch_config,
    pixel_bomb_png,
    tiny_jpeg,
    tiny_png,
    truncated_jpeg,
)

JPEG = tiny_jpeg()


make_cfg = fetch_config


@pytest.fixture(scope="module")
def http_server() -> Iterator[ImageServer]:
    with ImageServer() as server:
        yield server


@pytest.fixture
def server(http_server: ImageServer) -> ImageServer:
    http_server.reset()
    return http_server


def ok(result: FetchResult) -> FetchResult:
    assert result.ok, f"{result.error_kind}: {result.message}"
    return result


# ------------------------------------------------------------------------------------------ plain fetches


def test_fetch_jpeg_and_png(server: ImageServer) -> None:
    png = tiny_png()
    server.add("/a.jpg", JPEG)
    server.add("/b.png", png, "image/png")
    cfg = make_cfg()
    first = ok(fetch_image(server.url("/a.jpg"), cfg))
    assert (first.data, first.status_code, first.error_kind, first.source, first.attempts) == (JPEG, 200, None, "http", 1)
    assert first.final_url == server.url("/a.jpg")
    assert ok(fetch_image(server.url("/b.png"), cfg)).data == png
    assert server.hits["/a.jpg"] == 1 and server.hits["/b.png"] == 1


def test_404_is_not_retried(server: ImageServer) -> None:
    server.add_fault("/missing.jpg", "status", status=404)
    result = fetch_image(server.url("/missing.jpg"), make_cfg(max_retries=3))
    assert (result.ok, result.error_kind, result.status_code, result.attempts) == (False, "http_status", 404, 1)
    assert result.data is None
    assert server.hits["/missing.jpg"] == 1


def test_500_then_success_is_retried(server: ImageServer) -> None:
    server.add_fault("/flaky.jpg", "fail_then_ok", body=JPEG, failures=2, status=500)
    result = ok(fetch_image(server.url("/flaky.jpg"), make_cfg(max_retries=2)))
    assert result.data == JPEG and result.attempts == 3
    assert server.hits["/flaky.jpg"] == 3


def test_5xx_gives_up_after_max_retries(server: ImageServer) -> None:
    server.add_fault("/down.jpg", "fail_then_ok", body=JPEG, failures=99, status=503)
    result = fetch_image(server.url("/down.jpg"), make_cfg(max_retries=2))
    assert (result.error_kind, result.status_code, result.attempts) == ("http_status", 503, 3)
    assert "gave up after 3 attempts" in result.message
    assert server.hits["/down.jpg"] == 3


def test_501_is_not_retried(server: ImageServer) -> None:
    server.add_fault("/nope.jpg", "status", status=501)
    result = fetch_image(server.url("/nope.jpg"), make_cfg(max_retries=3))
    assert (result.error_kind, result.status_code, server.hits["/nope.jpg"]) == ("http_status", 501, 1)


def test_backoff_sleeps_grow(server: ImageServer) -> None:
    server.add_fault("/slowfix.jpg", "fail_then_ok", body=JPEG, failures=2, status=502)
    cfg = make_cfg(max_retries=2, backoff_s=0.15, max_backoff_s=5.0)
    started = time.monotonic()
    ok(fetch_image(server.url("/slowfix.jpg"), cfg))
    # 0.15 then 0.30 seconds (+ up to 25 % jitter each).
    assert 0.45 <= time.monotonic() - started < 2.0


def test_backoff_delay_schedule() -> None:
    cfg = make_cfg(backoff_s=0.5, max_backoff_s=3.0, max_retry_after_s=10.0)
    delays = [backoff_delay(cfg, "http://x/a.jpg", i) for i in range(5)]
    for i, delay in enumerate(delays[:3]):
        assert 0.5 * 2**i <= delay <= 0.5 * 2**i * 1.25
    assert delays[3] == delays[4] == 3.0  # capped
    assert delays == [backoff_delay(cfg, "http://x/a.jpg", i) for i in range(5)]  # repeatable
    assert backoff_delay(cfg, "http://x/a.jpg", 0) != backoff_delay(cfg, "http://x/b.jpg", 0)  # jittered per URL
    assert backoff_delay(cfg, "http://x/a.jpg", 0, retry_after=4.0) == 4.0
    assert backoff_delay(cfg, "http://x/a.jpg", 0, retry_after=600.0) == 10.0  # max_retry_after_s


def test_429_honours_retry_after_seconds(server: ImageServer) -> None:
    server.add_fault("/busy.jpg", "retry_after", body=JPEG, failures=1, retry_after=1)
    started = time.monotonic()
    result = ok(fetch_image(server.url("/busy.jpg"), make_cfg(max_retries=2)))
    elapsed = time.monotonic() - started
    assert result.attempts == 2 and server.hits["/busy.jpg"] == 2
    assert 1.0 <= elapsed < 1.9  # waited the server's second, not the 0.01 s backoff


def test_429_retry_after_is_capped(server: ImageServer) -> None:
    server.add_fault("/verybusy.jpg", "retry_after", body=JPEG, failures=1, retry_after=3600)
    started = time.monotonic()
    ok(fetch_image(server.url("/verybusy.jpg"), make_cfg(max_retry_after_s=0.2)))
    assert time.monotonic() - started < 1.5


def test_429_without_retries_reports_status(server: ImageServer) -> None:
    server.add_fault("/limited.jpg", "retry_after", body=JPEG, failures=5, retry_after=0)
    result = fetch_image(server.url("/limited.jpg"), make_cfg(max_retries=1))
    assert (result.error_kind, result.status_code, result.attempts) == ("http_status", 429, 2)


def test_parse_retry_after() -> None:
    now = time.time()
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 0 ") == 0.0
    in_ten = email.utils.formatdate(now + 10, usegmt=True)
    assert 8.0 <= (parse_retry_after(in_ten, now=now) or 0) <= 10.0
    assert parse_retry_after(email.utils.formatdate(now - 100, usegmt=True), now=now) == 0.0
    for bad in (None, "", "soon", "-3", "1.5e3"):
        assert parse_retry_after(bad) is None


# ----------------------------------------------------------------------------------- timeouts and errors


def test_slow_headers_time_out(server: ImageServer) -> None:
    server.add_fault("/slow.jpg", "slow", body=JPEG, delay=5.0)
    started = time.monotonic()
    result = fetch_image(server.url("/slow.jpg"), make_cfg(read_timeout_s=0.3, max_retries=1))
    assert (result.error_kind, result.attempts, result.status_code) == ("timeout", 2, None)
    assert time.monotonic() - started < 2.0
    assert server.hits["/slow.jpg"] == 2


def test_stalled_body_times_out(server: ImageServer) -> None:
    server.add_fault("/stall.jpg", "stall_body", body=JPEG, sent=200, delay=5.0)
    result = fetch_image(server.url("/stall.jpg"), make_cfg(read_timeout_s=0.3, max_retries=0))
    assert (result.error_kind, result.status_code, result.attempts) == ("timeout", 200, 1)


def test_connection_refused_is_a_connection_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = fetch_image(f"http://127.0.0.1:{port}/x.jpg", make_cfg(max_retries=1))
    assert (result.error_kind, result.attempts) == ("connection", 2)


def test_body_cut_short_is_retried(server: ImageServer) -> None:
    server.add_fault("/cut.jpg", "short_read", body=JPEG, sent=100)
    result = fetch_image(server.url("/cut.jpg"), make_cfg(max_retries=1))
    assert (result.error_kind, result.attempts) == ("connection", 2)
    assert server.hits["/cut.jpg"] == 2


def test_html_is_not_an_image(server: ImageServer) -> None:
    server.add("/page.jpg", HTML_PAGE, "text/html")
    result = fetch_image(server.url("/page.jpg"), make_cfg(max_retries=3))
    assert (result.error_kind, result.status_code, result.attempts) == ("not_image", 200, 1)
    assert "text/html" in result.message


def test_empty_body_is_not_an_image(server: ImageServer) -> None:
    server.add("/empty.jpg", b"")
    assert fetch_image(server.url("/empty.jpg"), make_cfg()).error_kind == "not_image"


def test_truncated_jpeg_passes_fetch_but_not_decoding(server: ImageServer) -> None:
    cut = truncated_jpeg()
    server.add("/trunc.jpg", cut)
    result = ok(fetch_image(server.url("/trunc.jpg"), make_cfg()))
    assert result.data == cut
    with pytest.raises(OSError), Image.open(io.BytesIO(result.data)) as img:
        img.load()


def test_pixel_bomb_passes_fetch(server: ImageServer) -> None:
    bomb = pixel_bomb_png()
    assert len(bomb) < 200_000
    server.add("/bomb.png", bomb, "image/png")
    data = ok(fetch_image(server.url("/bomb.png"), make_cfg())).data
    assert data is not None and image_format(data) == "png"
    assert struct.unpack(">II", data[16:24]) == (30000, 30000)  # IHDR width, height


# ----------------------------------------------------------------------------------------------- size cap


def test_too_large_by_content_length(server: ImageServer) -> None:
    server.add("/big.jpg", JPEG[:4] + bytes(300_000))
    result = fetch_image(server.url("/big.jpg"), make_cfg(max_bytes=200_000, max_retries=2))
    assert (result.error_kind, result.attempts) == ("too_large", 1)
    assert "Content-Length" in result.message


def test_too_large_while_streaming_without_content_length(server: ImageServer) -> None:
    server.add_fault("/bigchunked.jpg", "chunked", body=JPEG[:4] + bytes(300_000))
    result = fetch_image(server.url("/bigchunked.jpg"), make_cfg(max_bytes=200_000))
    assert (result.error_kind, result.attempts) == ("too_large", 1)
    assert "Content-Length" not in result.message


def test_chunked_body_within_limit_and_exact_limit(server: ImageServer) -> None:
    server.add_fault("/chunked.jpg", "chunked", body=JPEG)
    assert ok(fetch_image(server.url("/chunked.jpg"), make_cfg())).data == JPEG
    server.add("/exact.jpg", JPEG)
    assert ok(fetch_image(server.url("/exact.jpg"), make_cfg(max_bytes=len(JPEG)))).data == JPEG
    assert fetch_image(server.url("/exact.jpg"), make_cfg(max_bytes=len(JPEG) - 1)).error_kind == "too_large"


# ---------------------------------------------------------------------------------------------- redirects


def test_redirect_to_image(server: ImageServer) -> None:
    server.add("/real.jpg", JPEG)
    server.add_fault("/r1", "redirect", location="/real.jpg", status=301)
    server.add_fault("/r0", "redirect", location=server.url("/r1"), status=307)
    result = ok(fetch_image(server.url("/r0"), make_cfg()))
    assert result.data == JPEG and result.final_url == server.url("/real.jpg")
    assert result.attempts == 3
    assert (server.hits["/r0"], server.hits["/r1"], server.hits["/real.jpg"]) == (1, 1, 1)


def test_redirect_loop(server: ImageServer) -> None:
    server.add_fault("/loop-a", "redirect", location="/loop-b")
    server.add_fault("/loop-b", "redirect", location="/loop-a")
    result = fetch_image(server.url("/loop-a"), make_cfg(max_redirects=10))
    assert result.error_kind == "redirect_loop"
    assert (server.hits["/loop-a"], server.hits["/loop-b"]) == (1, 1)


def test_too_many_redirects(server: ImageServer) -> None:
    for i in range(6):
        server.add_fault(f"/hop{i}", "redirect", location=f"/hop{i + 1}")
    result = fetch_image(server.url("/hop0"), make_cfg(max_redirects=3))
    assert result.error_kind == "too_many_redirects"
    assert [server.hits[f"/hop{i}"] for i in range(6)] == [1, 1, 1, 1, 0, 0]


def test_redirect_to_metadata_address_is_refused(server: ImageServer) -> None:
    server.add_fault("/meta", "redirect", location="http://169.254.169.254/latest/meta-data")
    result = fetch_image(server.url("/meta"), make_cfg(allow_private=True))
    assert result.error_kind == "refused_address"
    assert "169.254.169.254" in result.message and "metadata" in result.message
    assert server.hits["/meta"] == 1 and result.attempts == 1


def test_redirect_to_private_and_bad_scheme_are_refused(server: ImageServer) -> None:
    server.add_fault("/to-private", "redirect", location="http://10.0.0.1/x.jpg")
    server.add_fault("/to-file", "redirect", location="file:///etc/passwd")
    assert fetch_image(server.url("/to-private"), make_cfg()).error_kind == "refused_address"
    assert fetch_image(server.url("/to-file"), make_cfg()).error_kind == "bad_scheme"


# ----------------------------------------------------------------------------------------- safe fetching

REFUSED = [
    ("http://127.0.0.1/x.jpg", "loopback"),
    ("http://localhost/x.jpg", "loopback"),
    ("http://127.1/x.jpg", "loopback"),
    ("http://2130706433/x.jpg", "loopback"),
    ("http://0x7f000001/x.jpg", "loopback"),
    ("http://[::1]/x.jpg", "loopback"),
    ("http://[::ffff:127.0.0.1]/x.jpg", "loopback"),
    ("http://10.0.0.1/x.jpg", "private"),
    ("http://10.255.255.254:8080/x.jpg", "private"),
    ("http://172.16.0.1/x.jpg", "private"),
    ("http://172.31.255.254/x.jpg", "private"),
    ("http://192.168.1.1/x.jpg", "private"),
    ("http://100.64.0.1/x.jpg", "private"),
    ("http://[fc00::1]/x.jpg", "private"),
    ("http://[fd12:3456::1]/x.jpg", "private"),
    ("http://[::ffff:10.0.0.1]/x.jpg", "private"),
    ("http://[::ffff:192.168.0.10]/x.jpg", "private"),
    ("http://[64:ff9b::a00:1]/x.jpg", "private"),  # NAT64 form of 10.0.0.1
    ("http://[2002:a00:1::]/x.jpg", "private"),  # 6to4 form of 10.0.0.1
    ("http://169.254.1.1/x.jpg", "link-local"),
    ("http://[fe80::1]/x.jpg", "link-local"),
    ("http://[fe80::1%25eth0]/x.jpg", "link-local"),
    ("http://169.254.169.254/latest/meta-data", "metadata"),
    ("http://[::ffff:169.254.169.254]/latest", "metadata"),
    ("http://[fd00:ec2::254]/latest", "metadata"),
    ("http://100.100.100.200/latest", "metadata"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
    ("http://224.0.0.1/x.jpg", "multicast"),
    ("http://[ff02::1]/x.jpg", "multicast"),
    ("http://0.0.0.0/x.jpg", "unspecified"),
    ("http://[::]/x.jpg", "unspecified"),
    ("http://240.0.0.1/x.jpg", "reserved"),
    ("http://255.255.255.255/x.jpg", "reserved"),
]


@pytest.mark.parametrize(("url", "category"), REFUSED)
def test_check_url_refuses(url: str, category: str) -> None:
    reason = check_url(url, FetchConfig())
    assert reason is not None and category in reason, reason


def test_check_url_allows_public_literals() -> None:
    cfg = FetchConfig()
    for url in ("http://93.184.216.34/x.jpg", "https://8.8.8.8/a/b.png", "http://[2606:4700::6810:85e5]/i.jpg",
                "http://[::ffff:93.184.216.34]/x.jpg"):
        assert check_url(url, cfg) is None, url


def test_allow_flags_and_allowed_hosts() -> None:
    private_ok = FetchConfig(allow_private=True)
    assert check_url("http://10.0.0.1/x.jpg", private_ok) is None
    assert check_url("http://[fe80::1]/x.jpg", private_ok) is None
    assert check_url("http://100.64.0.1/x.jpg", private_ok) is None
    assert check_url("http://127.0.0.1/x.jpg", private_ok) is not None  # loopback is its own switch
    assert "metadata" in (check_url("http://169.254.169.254/", private_ok) or "")  # never by a flag
    assert "multicast" in (check_url("http://224.0.0.1/", private_ok) or "")
    loopback_ok = FetchConfig(allow_loopback=True)
    assert check_url("http://127.0.0.1/x.jpg", loopback_ok) is None
    assert check_url("http://[::1]/x.jpg", loopback_ok) is None
    assert check_url("http://10.0.0.1/x.jpg", loopback_ok) is not None
    named = FetchConfig(allowed_hosts=["169.254.169.254", "Metadata.Google.Internal."])
    assert check_url("http://169.254.169.254/latest", named) is None
    assert check_url("http://metadata.google.internal/x", named) is None
    assert check_url("http://169.254.169.253/latest", named) is not None


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("ftp://example.com/x.jpg", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("gopher://127.0.0.1:70/", "scheme"),
        ("", "not a URL"),
        ("http://", "no host"),
        ("http://example.com:99999/x.jpg", "not a usable URL"),
    ],
)
def test_check_url_rejects_bad_links(url: str, kind: str) -> None:
    assert kind in (check_url(url, FetchConfig()) or "")


def test_fetch_error_kinds_for_bad_links() -> None:
    cfg = FetchConfig()
    assert fetch_image("ftp://example.com/x.jpg", cfg).error_kind == "bad_scheme"
    for bad in ("", "   ", None, float("nan"), "http://"):
        result = fetch_image(bad, cfg)  # type: ignore[arg-type]
        assert (result.ok, result.error_kind, result.attempts) == (False, "bad_link", 0)


def test_loopback_refused_without_a_request(server: ImageServer) -> None:
    server.add("/guarded.jpg", JPEG)
    result = fetch_image(server.url("/guarded.jpg"), make_cfg(allow_loopback=False))
    assert (result.error_kind, result.attempts) == ("refused_address", 0)
    result = fetch_image(server.url("/guarded.jpg", host="localhost"), make_cfg(allow_loopback=False))
    assert result.error_kind == "refused_address"
    assert server.hits["/guarded.jpg"] == 0


def test_allowed_loopback_and_allowed_host_work(server: ImageServer) -> None:
    server.add("/local.jpg", JPEG)
    assert ok(fetch_image(server.url("/local.jpg", host="localhost"), make_cfg(allow_loopback=True))).data == JPEG
    named = make_cfg(allow_loopback=False, allowed_hosts=["localhost"])
    assert ok(fetch_image(server.url("/local.jpg", host="localhost"), named)).data == JPEG
    # allowed_hosts names hosts, not addresses: the same server by IP stays refused.
    assert fetch_image(server.url("/local.jpg"), named).error_kind == "refused_address"
    assert server.hits["/local.jpg"] == 2


def test_session_refuses_at_connect_time(server: ImageServer) -> None:
    """The session itself checks addresses, even when a caller skips check_url."""
    server.add("/direct.jpg", JPEG)
    session = get_session(make_cfg(allow_loopback=False))
    with pytest.raises(RefusedAddress):
        session.get(server.url("/direct.jpg"), timeout=2)
    with pytest.raises(RefusedAddress):
        session.get("http://localhost:1/", timeout=2)
    assert server.hits["/direct.jpg"] == 0


def test_dns_rebinding_is_caught_at_connect(server: ImageServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that resolves to a public address for the check and to loopback a moment later."""
    server.add("/rebind.jpg", JPEG)
    answers = iter([ipaddress_entry("93.184.216.34")])

    def rebinding_dns(host: str, port: int) -> list[tuple[int, str, object]]:
        assert host == "rebind.test"
        return next(answers, None) or ipaddress_entry("127.0.0.1")

    monkeypatch.setattr(fetch, "_resolve", rebinding_dns)
    result = fetch_image(f"http://rebind.test:{server.port}/rebind.jpg", make_cfg(allow_loopback=False, max_retries=0))
    assert result.error_kind == "refused_address" and "127.0.0.1" in result.message
    assert server.hits["/rebind.jpg"] == 0


def test_connection_goes_to_checked_address_with_host_header(server: ImageServer,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    server.add("/pinned.jpg", JPEG)
    monkeypatch.setattr(fetch, "_resolve", lambda host, port: ipaddress_entry("127.0.0.1"))
    url = f"http://images.test:{server.port}/pinned.jpg"
    assert ok(fetch_image(url, make_cfg(allow_loopback=True))).data == JPEG
    assert server.host_headers["/pinned.jpg"] == f"images.test:{server.port}"


def ipaddress_entry(address: str) -> list[tuple[int, str, object]]:
    import ipaddress

    return [(socket.AF_INET, address, ipaddress.ip_address(address))]


# ----------------------------------------------------------------------------------------------- HTTPS


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=images.test",
         "-addext", "subjectAltName=DNS:images.test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def test_https_keeps_sni_and_certificate_check(tls_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = tls_files
    monkeypatch.setattr(fetch, "_resolve", lambda host, port: ipaddress_entry("127.0.0.1"))
    cfg = make_cfg(allow_loopback=True, max_retries=0)
    with ImageServer(tls=(cert, key)) as tls_server:
        tls_server.add("/secure.jpg", JPEG)
        session = fetch.new_session(cfg)
        session.verify = str(cert)
        good = fetch_image(f"https://images.test:{tls_server.port}/secure.jpg", cfg, session=session)
        assert ok(good).data == JPEG
        # Same address, a name the certificate does not cover: the check uses the name, not the IP.
        bad = fetch_image(f"https://other.test:{tls_server.port}/secure.jpg", cfg, session=session)
        assert (bad.error_kind, bad.attempts) == ("tls", 1)


# ------------------------------------------------------------------------------- sessions and concurrency


def test_one_session_per_config_and_process() -> None:
    cfg = make_cfg()
    session = get_session(cfg)
    assert get_session(make_cfg()) is session
    assert get_session(make_cfg(allow_loopback=False)) is not session
    assert session.trust_env is False
    adapter = session.get_adapter("http://example.com/")
    assert adapter.poolmanager.connection_pool_kw["maxsize"] == cfg.pool_size
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not reuse the parent's pooled sockets
        os.write(write_fd, b"1" if get_session(cfg) is not session else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read_fd, 1) == b"1"
    os.close(read_fd)
    os.close(write_fd)


def test_session_does_not_follow_redirects_by_itself(server: ImageServer) -> None:
    server.add("/target.jpg", JPEG)
    server.add_fault("/auto", "redirect", location="/target.jpg")
    response = get_session(make_cfg()).get(server.url("/auto"), timeout=2)  # allow_redirects defaults to True
    assert response.status_code == 302 and response.next is None
    assert server.hits["/target.jpg"] == 0


@pytest.mark.parametrize("limit", [1, 2])
def test_per_host_concurrency_limit(server: ImageServer, limit: int) -> None:
    path = f"/gate{limit}.jpg"
    server.add_fault(path, "slow", body=JPEG, delay=0.4)
    cfg = make_cfg(per_host_concurrency=limit)
    results: list[FetchResult] = []
    threads = [threading.Thread(target=lambda: results.append(fetch_image(server.url(path), cfg))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(results) == 3 and all(r.ok for r in results)
    assert server.max_in_flight[path] == limit


# ------------------------------------------------------------------------------------- images_dir cache


def test_images_dir_cache_fetches_once(server: ImageServer, tmp_path: Path) -> None:
    server.add("/images/I/61I9XdN6OFL.jpg", JPEG)
    url = server.url("/images/I/61I9XdN6OFL.jpg")
    first = ok(fetch_or_load(url, make_cfg(), tmp_path))
    assert first.source == "http"
    assert (tmp_path / cache_file_name(url)).read_bytes() == JPEG
    second = ok(fetch_or_load(url, make_cfg(), tmp_path))
    assert (second.source, second.data, second.attempts) == ("cache", JPEG, 0)
    assert server.hits["/images/I/61I9XdN6OFL.jpg"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [cache_file_name(url)]  # no temporary files left


def test_images_dir_never_caches_failures_and_replaces_junk(server: ImageServer, tmp_path: Path) -> None:
    server.add_fault("/gone.jpg", "status", status=404)
    assert fetch_or_load(server.url("/gone.jpg"), make_cfg(), tmp_path).error_kind == "http_status"
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "junk.jpg").write_bytes(HTML_PAGE)  # e.g. an error page saved by another tool
    server.add("/junk.jpg", JPEG)
    assert ok(fetch_or_load(server.url("/junk.jpg"), make_cfg(), tmp_path)).source == "http"
    assert (tmp_path / cache_file_name(server.url("/junk.jpg"))).read_bytes() == JPEG
    fresh = tmp_path / "new" / "deeper"
    server.add("/deep.jpg", JPEG)
    ok(fetch_or_load(server.url("/deep.jpg"), make_cfg(), fresh))
    assert (fresh / cache_file_name(server.url("/deep.jpg"))).is_file()


def test_images_dir_none_always_fetches(server: ImageServer) -> None:
    server.add("/nocache.jpg", JPEG)
    ok(fetch_or_load(server.url("/nocache.jpg"), make_cfg(), None))
    ok(fetch_or_load(server.url("/nocache.jpg"), make_cfg(), None))
    assert server.hits["/nocache.jpg"] == 2


def test_image_file_name() -> None:
    assert image_file_name("https://m.media-amazon.com/images/I/61I9XdN6OFL.jpg") == "61I9XdN6OFL.jpg"
    assert image_file_name("https://m.media-amazon.com/images/I/71+abc-D_e.jpg?x=1#f") == "71+abc-D_e.jpg"
    assert image_file_name("https://h/images/I/41%2BpQ.jpg") == "41+pQ.jpg"
    odd = ["https://h/", "https://h", "https://h/a/..", "https://h/a/.hidden.jpg", "https://h/x/%2E%2E",
           "https://h/a%2Fb.jpg", "https://h/caf\u00e9 photo.png", "https://h/" + "a" * 300 + ".jpg", ""]
    names = [image_file_name(u) for u in odd]
    for name in names:
        assert name.startswith("url-") and "/" not in name and len(name) < 60, name
    assert len(set(names)) == len(names)  # different links, different files
    assert names[6].endswith(".png") and names[0].endswith(".img")
    assert image_file_name("https://h/") == names[0]  # stable


def test_image_format_magic_bytes() -> None:
    assert image_format(JPEG) == "jpeg"
    assert image_format(tiny_png()) == "png"
    assert image_format(b"GIF89a" + bytes(10)) == "gif"
    assert image_format(b"RIFF\x10\x00\x00\x00WEBPVP8 ") == "webp"
    assert image_format(b"BM" + bytes(30)) == "bmp"
    assert image_format(b"II*\x00" + bytes(8)) == "tiff"
    assert image_format(b"MM\x00*" + bytes(8)) == "tiff"
    for junk in (b"", HTML_PAGE, b"%PDF-1.7", b"RIFF\x10\x00\x00\x00WAVEfmt "):
        assert image_format(junk) is None
