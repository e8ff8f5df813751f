"""Whether output reaches a person at a terminal or a log file: bars that redraw a line with carriage returns
belong on a terminal only.

Under spark-submit (``PYSPARK_GATEWAY_PORT`` set) the driver JVM is this process's parent: it draws Spark's
console bar on its own stderr and passes this process's output, stdout and stderr alike, to its stdout
(Spark's PythonRunner). Linux's /proc tells where the parent's streams go; where it cannot, a terminal is
assumed. In local mode this process starts the JVM, which inherits its streams.
"""

from __future__ import annotations

import os
import sys


def _under_spark_submit() -> bool:
    return "PYSPARK_GATEWAY_PORT" in os.environ


def _parent_stream_is_terminal(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/{os.getppid()}/fd/{fd}").startswith(("/dev/pts/", "/dev/tty"))
    except OSError:
        return True


def spark_console_is_terminal() -> bool:
    """Whether the driver JVM's stderr, where Spark draws its console progress bar, is a terminal."""
    return _parent_stream_is_terminal(2) if _under_spark_submit() else sys.stderr.isatty()


def stderr_is_terminal() -> bool:
    """Whether what this process writes to stderr reaches a terminal."""
    return _parent_stream_is_terminal(1) if _under_spark_submit() else sys.stderr.isatty()
