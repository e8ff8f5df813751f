"""Prints a YAML configuration's spark.conf settings as key=value lines, for submit.sh's --conf options."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def spark_conf_lines(path: str | Path) -> list[str]:
    data = yaml.safe_load(Path(path).read_text()) or {}
    conf = (data.get("spark") or {}).get("conf") or {}
    return [f"{k}={'true' if v is True else 'false' if v is False else v}" for k, v in conf.items()]


if __name__ == "__main__":
    for line in spark_conf_lines(sys.argv[1]):
        print(line)
