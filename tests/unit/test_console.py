"""Where a job's output reaches: bars that redraw a line belong on a terminal, plain lines in a log."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PROBE = ("import sys; from imagequant.console import spark_console_is_terminal as s, stderr_is_terminal as e; "
         "open(sys.argv[1], 'w').write(f'{s()} {e()}')")


def _probe(tmp_path: Path, under_spark_submit: bool, stdout: Any, stderr: Any) -> str:
    """The two answers of a Python process whose own streams go nowhere near a terminal; under spark-submit a
    shell stands in for the driver JVM, its parent, with ``stdout`` and ``stderr``."""
    answer = tmp_path / "answer.txt"
    python = f"{sys.executable} -c \"{PROBE}\" {answer} </dev/null >/dev/null 2>/dev/null"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    if under_spark_submit:
        env["PYSPARK_GATEWAY_PORT"] = "1"
    # "; true" keeps the shell from replacing itself with python, so it stays the parent
    subprocess.run(["bash", "-c", f"{python}; true"], env=env, stdout=stdout, stderr=stderr, timeout=60, check=True)
    return answer.read_text()


def test_local_mode_asks_this_process_and_spark_submit_its_parent(tmp_path: Path) -> None:
    main, terminal = pty.openpty()
    try:
        devnull = subprocess.DEVNULL
        # local mode: this process's stderr, here /dev/null, whatever the parent's
        assert _probe(tmp_path, False, terminal, terminal) == "False False"
        # spark-submit: Spark's bar is the JVM's stderr; this process's output goes to the JVM's stdout
        assert _probe(tmp_path, True, terminal, terminal) == "True True"
        assert _probe(tmp_path, True, devnull, terminal) == "True False"
        assert _probe(tmp_path, True, terminal, devnull) == "False True"
        assert _probe(tmp_path, True, devnull, devnull) == "False False"
    finally:
        os.close(main)
        os.close(terminal)


def test_a_terminal_of_this_process_counts_in_local_mode(tmp_path: Path) -> None:
    main, terminal = pty.openpty()
    try:
        answer = tmp_path / "answer.txt"
        env = {k: v for k, v in os.environ.items() if k != "PYSPARK_GATEWAY_PORT"}
        subprocess.run([sys.executable, "-c", PROBE, str(answer)], env={**env, "PYTHONPATH": str(REPO)},
                       stdout=subprocess.DEVNULL, stderr=terminal, timeout=60, check=True)
        assert answer.read_text() == "True True"
    finally:
        os.close(main)
        os.close(terminal)
