"""The images-dir cache never serves one link's bytes for another link.

Files the job saves are named by the whole link (``cache_file_name``); a user-placed file named by the
link's basename (the challenge downloader's layout, ``image_file_name``) is only a fallback for links the
job has not saved, and only for a link no other link shares that name with (``plain_names_unique``). Served by a loopback server whose answer depends on the query string and the host.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from imagequant.config import FetchConfig
from imagequant.fetch import (
    cache_file_name,
    cached_image_paths,
    fetch_or_load,
    image_file_name,
    plain_names_unique,
)
from tests.httpserver import HTML_PAGE, fetch_config, tiny_jpeg, tiny_png

RED = tiny_jpeg(color=(200, 30, 30))
BLUE = tiny_jpeg(color=(30, 30, 200))
GREEN = tiny_png(color=(30, 200, 30))


def make_cfg() -> FetchConfig:
    return fetch_config(max_retries=0)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    bodies: dict[str, bytes] = {}
    hits: dict[str, int] = {}

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        # The answer depends on the whole request target and the Host header, not only the path.
        key = f"{self.headers.get('Host', '').split(':')[0]}{self.path}"
        self.hits[key] = self.hits.get(key, 0) + 1
        body = self.bodies.get(key)
        status = 200 if body is not None else 404
        body = body if body is not None else b"no"
        self.send_response(status)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[tuple[int, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"bodies": {}, "hits": {}})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd.server_address[1], handler
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_links_differing_only_by_query_get_their_own_images(server: tuple[int, type[_Handler]], tmp_path: Path,
                                                            order: tuple[int, int]) -> None:
    port, handler = server
    handler.bodies.update({"127.0.0.1/img/photo.jpg?v=1": RED, "127.0.0.1/img/photo.jpg?v=2": BLUE})
    links = [f"http://127.0.0.1:{port}/img/photo.jpg?v=1", f"http://127.0.0.1:{port}/img/photo.jpg?v=2"]
    expected = [RED, BLUE]
    for i in order:
        assert fetch_or_load(links[i], make_cfg(), tmp_path).data == expected[i]
    for i in order:  # the second round is served from the cache, still each link its own image
        again = fetch_or_load(links[i], make_cfg(), tmp_path)
        assert (again.source, again.data) == ("cache", expected[i])
    assert handler.hits == {"127.0.0.1/img/photo.jpg?v=1": 1, "127.0.0.1/img/photo.jpg?v=2": 1}
    assert not (tmp_path / "photo.jpg").exists()  # the shared readable name is never written


def test_links_differing_only_by_host_get_their_own_images(server: tuple[int, type[_Handler]], tmp_path: Path) -> None:
    port, handler = server
    handler.bodies.update({"127.0.0.1/a/pic.png": GREEN, "localhost/b/pic.png": RED})
    cfg = FetchConfig(connect_timeout_s=2.0, read_timeout_s=2.0, max_retries=0, allow_loopback=True,
                      allowed_hosts=["localhost"])
    one, two = f"http://127.0.0.1:{port}/a/pic.png", f"http://localhost:{port}/b/pic.png"
    assert fetch_or_load(one, cfg, tmp_path).data == GREEN
    assert fetch_or_load(two, cfg, tmp_path).data == RED
    assert fetch_or_load(one, cfg, tmp_path).data == GREEN
    assert fetch_or_load(two, cfg, tmp_path).data == RED


def test_user_placed_basename_is_a_fallback_only(server: tuple[int, type[_Handler]], tmp_path: Path) -> None:
    port, handler = server
    handler.bodies.update({"127.0.0.1/x/item.jpg?a": RED, "127.0.0.1/x/item.jpg?b": BLUE})
    link_a, link_b = f"http://127.0.0.1:{port}/x/item.jpg?a", f"http://127.0.0.1:{port}/x/item.jpg?b"
    # Saved by the job for link a first: the user's file is not used for a.
    assert fetch_or_load(link_a, make_cfg(), tmp_path).data == RED
    (tmp_path / "item.jpg").write_bytes(GREEN)  # the downloader's layout, placed by the user
    assert fetch_or_load(link_a, make_cfg(), tmp_path).data == RED
    # Link b has no saved file, but item.jpg may as well be a's image: unless the caller knows b is the only
    # link of that name, it is fetched.
    assert plain_names_unique([link_a, link_b]) == [False, False]
    fetched = fetch_or_load(link_b, make_cfg(), tmp_path)
    assert (fetched.source, fetched.data) == ("http", BLUE)
    # A link alone with its name: the user-placed file serves it (the documented --images-dir layout).
    link_c = f"http://127.0.0.1:{port}/y/only.jpg"
    (tmp_path / "only.jpg").write_bytes(GREEN)
    assert plain_names_unique([link_a, link_c]) == [True, True]
    fallback = fetch_or_load(link_c, make_cfg(), tmp_path, plain_file=True)
    assert (fallback.source, fallback.data) == ("plain_file", GREEN)
    assert handler.hits.get("127.0.0.1/y/only.jpg", 0) == 0


def test_plain_names_are_unique_only_for_one_distinct_link() -> None:
    links = ["http://h/q.jpg?id=1", "http://h/q.jpg?id=2", "http://127.0.0.1:8/x.jpg", "http://localhost:8/x.jpg",
             "http://h/solo.jpg", "http://h/solo.jpg", "http://h/caf\u00e9 %.jpg"]
    # The same link twice is one link; names that are not plain are a hash of the whole link.
    assert plain_names_unique(links) == [False, False, False, False, True, True, True]


def test_saved_names_never_collide_with_user_names() -> None:
    links = ["https://h/images/I/61I9XdN6OFL.jpg", "https://h/images/I/61I9XdN6OFL.jpg?x=1",
             "https://other/images/I/61I9XdN6OFL.jpg", "https://h/a/.hidden.jpg", "https://h/",
             "https://h/caf\u00e9 photo.png", "https://h/" + "a" * 300 + ".jpg"]
    saved = [cache_file_name(u) for u in links]
    assert len(set(saved)) == len(saved)
    assert saved[0].startswith("61I9XdN6OFL~") and saved[0].endswith(".jpg")
    for name in saved:
        assert "~" in name and "/" not in name and len(name) < 160, name
    # No link's readable name can be any link's saved name ('~' is never in a readable name).
    crafted = f"https://evil/{saved[0]}"
    assert image_file_name(crafted) != saved[0]
    assert all("~" not in image_file_name(u) for u in [*links, crafted])
    assert cached_image_paths(links[0], "/d")[0].name == saved[0]


def test_junk_in_a_saved_file_is_replaced(server: tuple[int, type[_Handler]], tmp_path: Path) -> None:
    port, handler = server
    handler.bodies["127.0.0.1/j/junk.jpg"] = RED
    link = f"http://127.0.0.1:{port}/j/junk.jpg"
    (tmp_path / cache_file_name(link)).write_bytes(HTML_PAGE)
    (tmp_path / "junk.jpg").write_bytes(HTML_PAGE)  # a user's junk is skipped and left alone
    first = fetch_or_load(link, make_cfg(), tmp_path)
    assert (first.source, first.data) == ("http", RED)
    assert (tmp_path / cache_file_name(link)).read_bytes() == RED
    assert (tmp_path / "junk.jpg").read_bytes() == HTML_PAGE
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([cache_file_name(link), "junk.jpg"])


def test_a_placed_file_that_is_not_an_image_is_named_when_the_fetch_fails(server: tuple[int, type[_Handler]],
                                                                          tmp_path: Path) -> None:
    # The user placed page.jpg for the link, but it is HTML: the link is fetched, the server has no image, and
    # the row's message says why the placed file was not used.
    port, _ = server
    (tmp_path / "page.jpg").write_bytes(HTML_PAGE)
    failed = fetch_or_load(f"http://127.0.0.1:{port}/p/page.jpg", make_cfg(), tmp_path, plain_file=True)
    assert not failed.ok and failed.error_kind == "http_status"
    assert failed.message.endswith("(fetched: page.jpg in the images folder is not an image)")
