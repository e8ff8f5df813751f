"""Progress where a scheduler's log can show it: plain lines when Spark's console is not a terminal
(imagequant.console, tested in tests/unit/test_console.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def test_a_job_logs_plain_progress_lines_when_stderr_is_not_a_terminal(spark: Any) -> None:
    """A stage that runs for seconds gets plain progress lines at the configured interval, named by the job step
    it belongs to, and no console bar."""
    from imagequant.spark.session import stage_progress

    script = (
        "import threading\n"
        "import time\n"
        "from imagequant.config import load_config\n"
        "from imagequant.spark.session import build_session, job_step, start_progress_log\n"
        "config = load_config(overrides=['spark.master=local[2]', 'spark.progress_interval_s=0.5',"
        " 'spark.conf.spark.ui.enabled=false'])\n"
        "spark = build_session(config, 'progress-test')\n"
        "assert build_session(config, 'progress-test') is spark\n"  # reused: still one log
        "assert start_progress_log(spark, 0.5) is spark.sparkContext._imagequant_progress\n"
        "assert [t.name for t in threading.enumerate()].count('imagequant-progress') == 1\n"
        "context = spark.sparkContext\n"
        "context.setJobGroup('outer', 'the caller', True)\n"
        "with job_step(spark, 'sleeping on purpose'):\n"
        "    context.parallelize(range(4), 4).foreach(lambda _: time.sleep(3))\n"
        "assert [context.getLocalProperty(k) for k in ('spark.jobGroup.id', 'spark.job.description',"
        " 'spark.job.interruptOnCancel')] == ['outer', 'the caller', 'true']\n"
        "for step in ('sleeping on purpose', 'another step', 'another step'):\n"
        "    with job_step(spark, step):\n"
        "        pass\n"
        "assert sorted(context._imagequant_steps.values()) == ['another step', 'sleeping on purpose']\n"  # per name
        "spark.stop()\n"
        "print('done')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("[imagequant] progress after ")]
    assert lines and all(" tasks done, " in line for line in lines), done.stderr[-3000:]
    assert all(": sleeping on purpose: stage " in line for line in lines), lines
    assert "of 4 tasks done" in lines[-1]
    assert "\r" not in done.stderr and "[Stage " not in done.stderr
    assert stage_progress(spark) == ""  # nothing runs: no line
