"""Model files this machine derives once from installed ones (the OCR detectors' int8 copies, ResNet-50's
export for OpenVINO), found again by name and built under a file lock so two workers never build one twice.

Each kind of file has its folder in :func:`cache_dirs`: the Python environment's ``share/imagequant/KIND``
(shipped with a packed environment or image), else ``~/.cache/imagequant/KIND``. A file's name carries a hash
of everything it is made from, so a changed source or recipe gets a new file and an old one is never reused.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Callable
from pathlib import Path

from imagequant.errors import ConfigError


def cache_dirs(kind: str) -> list[Path]:
    """Where files of ``kind`` are looked for, in order; the first writable one is where a missing one is built."""
    return [Path(sys.prefix, "share", "imagequant", kind), Path.home() / ".cache" / "imagequant" / kind]


def find(kind: str, name: str) -> Path | None:
    return next((d / name for d in cache_dirs(kind) if (d / name).is_file()), None)


def built_once(kind: str, name: str, build: Callable[[Path], None], announce: str, unwritable: str) -> Path:
    """The file ``name`` of ``kind``: found, or built by ``build(target)`` (which must write ``target`` whole
    or not at all) after ``announce`` is said on stderr. ``unwritable`` ends the error when no folder is."""
    found = find(kind, name)
    if found is not None:
        return found
    target = writable_dir(kind, unwritable) / name
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker of this machine may be building it right now
        if not target.is_file():
            print(f"[imagequant] {announce} in {target.parent} (once per machine)", file=sys.stderr, flush=True)
            build(target)
    return target


def writable_dir(kind: str, unwritable: str) -> Path:
    for d in cache_dirs(kind):
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(d, os.W_OK):
            return d
    raise ConfigError(f"none of {', '.join(map(str, cache_dirs(kind)))} is writable: {unwritable}")
