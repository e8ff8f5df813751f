"""What every job's entry point shares: common options, configuration loading and exit codes.

Bad arguments, configuration or input end the job before any Spark work with one ``error:`` line on
stderr and exit status 2; a job that ran but must report failure exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from imagequant.config import Config, load_config
from imagequant.core import locations
from imagequant.errors import UsageError

EXIT_FAILED = 1
EXIT_USAGE = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's exit status for usage errors (2) and a one-line message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def job_parser(prog: str, description: str) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=description)
    parser.add_argument("--conf", action="append", default=[], metavar="FILE",
                        help="YAML configuration merged over conf/default.yaml (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override one setting, e.g. --set ocr.engine=rapidocr (repeatable)")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.conf, args.overrides)


def output_folder(path: str | Path, option: str) -> Path:
    """``path`` made ready as a job's output folder before any work (created with its parents), so a place
    that cannot hold it is one usage error now rather than a traceback after the work. A ``file://`` URI is
    its local path; another URI is refused, since these folders are written with local file calls."""
    folder = _local(path, option, "folder")
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option} {path} exists and is not a folder")
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{option} {path} cannot be created: {exc.strerror or exc}") from None
    _MADE_FOLDERS.extend(missing)  # deepest first
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path} is not writable")
    return folder


def foreign_entries(folder: Path, known: Collection[str]) -> list[str]:
    """The entries of ``folder`` that are not in ``known``, sorted; dot files are the file systems' own."""
    return sorted(p.name for p in folder.iterdir() if p.name not in known and not p.name.startswith("."))


def refuse_foreign_folder(option: str, location: str | Path, foreign: Sequence[str], kind: str, writer: str) -> None:
    """A usage error naming the first of ``foreign``, the entries that make a job's target folder someone else's:
    a store or a model directory written among other files would mix with them, and replace same-named ones."""
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise UsageError(f"{option} {location} is a folder of other files ({shown}) and holds no {kind}; give a "
                         f"new or empty folder, or a {kind} {writer} wrote")


def output_file(path: str | Path, option: str) -> Path:
    """``path`` checked as a job's output file before any work: not a folder, in a folder it can be written to."""
    file = _local(path, option, "file")
    if file.is_dir():
        raise UsageError(f"{option} {path} is a folder, not a file")
    output_folder(file.parent, f"{option}'s folder")
    return file


def _local(path: str | Path, option: str, kind: str) -> Path:
    if not locations.is_uri(path):
        return Path(path)
    local = locations.local_path(path)
    if local is None:
        raise UsageError(f"{option} {path} is not on this machine's file system: give a local {kind} (or a "
                         "file:// URI); only --store may be a remote location")
    return local


# The folders this process made with output_folder, so a job that fails leaves none of them empty behind it.
_MADE_FOLDERS: list[Path] = []


def _remove_empty_made_folders() -> None:
    """Removes the folders output_folder made that are still empty (a folder holding anything stays)."""
    while _MADE_FOLDERS:
        with contextlib.suppress(OSError):
            _MADE_FOLDERS.pop(0).rmdir()


def run_job(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> None:
    """Runs a job's main, turning UsageError into one message and exit 2. A job that does not succeed
    removes the output folders it made and left empty."""
    code = EXIT_FAILED
    _MADE_FOLDERS.clear()
    try:
        code = main(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    finally:
        if code != 0:
            _remove_empty_made_folders()
    raise SystemExit(code)
