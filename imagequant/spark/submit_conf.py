"""What submit.sh needs before spark-submit starts: the master, the Spark settings and the package zip.

Run as a script by submit.sh (``python imagequant/spark/submit_conf.py --conf FILE --set K=V --zip-dir DIR``);
it prints one line per item::

    master local[2]                      (empty value: none configured)
    conf spark.sql.shuffle.partitions=8  (one line per spark.conf setting)
    zip /repo/build/imagequant-1a2b3c4d5e6f.zip

The configuration is merged exactly as the job merges it (``load_config``: conf/default.yaml, each --conf,
then each --set), so settings that only take effect before the JVM starts (spark.driver.memory,
spark.driver.extraJavaOptions...) reach spark-submit as ``--conf`` options, and a bad setting stops the
submission with the job's own ``error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
if str(REPO) not in sys.path:  # run as a script from a checkout: make the package importable
    sys.path.insert(0, str(REPO))

from imagequant.config import load_config  # noqa: E402
from imagequant.errors import UsageError  # noqa: E402

# Zips older than this are removed when a new one is written (each source version gets its own file, so a
# job still running from an older zip is never disturbed by a newer submission).
_STALE_ZIP_SECONDS = 24 * 3600


def resolve(conf_paths: Sequence[str | Path], overrides: Sequence[str]) -> tuple[str | None, dict[str, str]]:
    """The configured master (None when unset) and the merged ``spark.conf`` settings."""
    config = load_config(list(conf_paths), list(overrides))
    return config.spark.master, dict(config.spark.conf)


def package_sources(repo: Path) -> list[Path]:
    """The package's Python files, sorted, without caches."""
    return sorted(p for p in (repo / "imagequant").rglob("*.py") if "__pycache__" not in p.parts)


def package_zip(repo: Path, out_dir: Path) -> Path:
    """``out_dir/imagequant-<hash>.zip`` holding the package sources; built only when that version is new.

    Named by a hash of the sources so concurrent submissions of different checkouts never overwrite a zip
    that a running job still serves to its executors; written to a temporary file and renamed, so a reader
    never sees half a zip.
    """
    sources = package_sources(repo)
    digest = hashlib.sha1()
    for path in sources:
        digest.update(path.relative_to(repo).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"imagequant-{digest.hexdigest()[:12]}.zip"
    if target.exists():
        os.utime(target)  # recently used: keeps it out of the stale sweep
        return target
    fd, tmp = tempfile.mkstemp(prefix=".imagequant-", suffix=".zip", dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sources:
                # Fixed timestamps: the same sources give the same bytes.
                info = zipfile.ZipInfo(path.relative_to(repo).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, path.read_bytes())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    now = time.time()
    for old in out_dir.glob("imagequant-*.zip"):
        if old != target and now - old.stat().st_mtime > _STALE_ZIP_SECONDS:
            old.unlink(missing_ok=True)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="submit_conf", description=__doc__.splitlines()[0])
    parser.add_argument("--conf", action="append", default=[], metavar="FILE")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--zip-dir", type=Path, help="build the package zip here and print its path")
    args = parser.parse_args(argv)
    try:
        master, conf = resolve(args.conf, args.overrides)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lines = [f"master {master or ''}"]
    for key, value in conf.items():
        if "\n" in key or "\n" in value:
            print(f"error: spark.conf.{key} holds a line break", file=sys.stderr)
            return 2
        lines.append(f"conf {key}={value}")
    if args.zip_dir is not None:
        lines.append(f"zip {package_zip(REPO, args.zip_dir)}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
