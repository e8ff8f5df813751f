"""Where a store lives: every store path goes through here, as a URI.

A store is given as a local path (``/data/store``, ``store``) or a URI (``file:///data/store``,
``hdfs://nn/store``, ``s3a://bucket/store``). Spark opens these URIs through Hadoop's FileSystem API;
pandas and Petastorm readers open them through :func:`arrow_filesystem`. Nothing else builds store paths,
so a job that accepts a location in one place accepts it everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

# Hadoop's S3 connector schemes; pyarrow knows the same buckets as s3://.
_ARROW_SCHEMES = {"s3a": "s3", "s3n": "s3"}


def is_uri(location: str | Path) -> bool:
    return "://" in str(location)


def store_uri(location: str | Path) -> str:
    """The location as a URI without a trailing slash: local paths become absolute ``file://`` URIs."""
    text = str(location)
    if is_uri(text):
        return text.rstrip("/")
    return Path(text).expanduser().resolve().as_uri()


def join(location: str | Path, *parts: str) -> str:
    """``location``'s URI with ``parts`` appended as path segments."""
    return "/".join([store_uri(location), *(p.strip("/") for p in parts)])


def local_path(location: str | Path) -> Path | None:
    """The local path of a local path or ``file://`` URI; None for a remote location."""
    text = str(location)
    if not is_uri(text):
        return Path(text).expanduser().resolve()
    parts = urlsplit(text)
    if parts.scheme != "file":
        return None
    return Path(unquote(parts.path))


def arrow_filesystem(location: str | Path) -> tuple[Any, str]:
    """(pyarrow FileSystem, path inside it) for a store location, for readers that do not run on Spark."""
    from pyarrow import fs

    path = local_path(location)
    if path is not None:
        return fs.LocalFileSystem(), str(path)
    uri = store_uri(location)
    scheme, rest = uri.split("://", 1)
    filesystem, inner = fs.FileSystem.from_uri(f"{_ARROW_SCHEMES.get(scheme, scheme)}://{rest}")
    return filesystem, inner


def read_text(location: str | Path) -> str | None:
    """A small file's text, or None when it does not exist."""
    filesystem, path = arrow_filesystem(location)
    try:
        with filesystem.open_input_stream(path) as stream:
            return stream.read().decode("utf-8")
    except FileNotFoundError:
        return None
