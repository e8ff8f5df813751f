"""Running on a real cluster: submit.sh, the GPU discovery script, and a Spark standalone cluster on loopback.

The standalone test starts a real master and two workers with pyspark's own ``bin/spark-class``, submits
``extract_features`` through ``./submit.sh --master spark://...``, kills one executor JVM with SIGKILL in the
middle of the OCR stage, and checks that the job still finishes with exactly the rows, statuses and OCR of a
local run of the same catalog. It prints how long each part took and which tasks Spark retried.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pyspark
import pytest

from imagequant.config import load_config
from imagequant.spark.extract import run_extract
from imagequant.spark.inference import run_predict

REPO = Path(__file__).resolve().parents[2]
SUBMIT = REPO / "submit.sh"
DISCOVERY = REPO / "docker" / "get_gpus_resources.sh"
SPARK_HOME = Path(pyspark.__file__).resolve().parent
SPARK_CLASS = SPARK_HOME / "bin" / "spark-class"

# The same job settings for the local reference run and the cluster run.
JOB_SETTINGS = [
    "fetch.allow_loopback=true", "fetch.connect_timeout_s=2", "fetch.read_timeout_s=5", "fetch.max_retries=1",
    "fetch.backoff_s=0.05", "fetch.max_backoff_s=0.2", "cnn.batch_size=8", "spark.image_partitions_per_core=4",
    # Cheaper OCR keeps the test short on two cores; the OCR stage still lasts long enough to kill into.
    "ocr.rotated_pass=false", "ocr.second_pass=false", "imaging.ocr_min_side=600",
]
N_IMAGES = 20
KILL_AFTER_IMAGES = 5  # images downloaded by the cluster run before one executor is killed


# ------------------------------------------------------------------------------------------- processes


def proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, command line) for every process readable in /proc."""
    table: dict[int, tuple[int, int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # exited while we looked
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
        table[int(entry.name)] = (int(fields[1]), int(fields[2]), cmdline)
    return table


def descendants(roots: set[int], table: dict[int, tuple[int, int, str]] | None = None) -> set[int]:
    """Every process below ``roots`` (not the roots themselves)."""
    table = table if table is not None else proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class StandaloneCluster:
    """A Spark standalone master and workers on 127.0.0.1, started from pyspark's bundled scripts.

    Every process is started in a new session (its own process group); ``stop`` ends those groups and
    every process below them (executors, Python workers) by process id, SIGTERM first, then SIGKILL.
    """

    root: Path
    workers: int = 2
    worker_cores: int = 1
    worker_memory: str = "1g"
    master_port: int = field(default_factory=free_port)
    master_ui_port: int = field(default_factory=free_port)
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)
    worker_pids: list[int] = field(default_factory=list)
    # Processes below a killed executor (pid -> command line): no longer below a worker once it is gone.
    orphans: dict[int, str] = field(default_factory=dict)
    leftover: set[int] = field(default_factory=set)  # still alive after stop() (should stay empty)
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    def env(self) -> dict[str, str]:
        """Environment of every process: private dirs, loopback only, the test's interpreter for Python."""
        env = dict(os.environ)
        dirs = {name: self.root / sub for name, sub in [
            ("SPARK_CONF_DIR", "conf"), ("SPARK_LOG_DIR", "logs"), ("SPARK_PID_DIR", "pids"),
            ("SPARK_WORKER_DIR", "work"), ("SPARK_LOCAL_DIRS", "local")]}
        for name, path in dirs.items():
            path.mkdir(parents=True, exist_ok=True)
            env[name] = str(path)
        env.update({
            "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOCAL_HOSTNAME": "127.0.0.1",
            "SPARK_DAEMON_MEMORY": "512m", "PYSPARK_PYTHON": sys.executable, "IMAGEQUANT_PYTHON": sys.executable,
            "OMP_THREAD_LIMIT": "1",
        })
        return env

    def spawn(self, args: list[str], log_name: str, cwd: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.root.mkdir(parents=True, exist_ok=True)
        log = (self.root / f"{log_name}.log").open("wb")
        self._logs.append(log)
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd or self.root, env=env or self.env(), start_new_session=True)
        self.started.append(proc)
        return proc

    def state(self) -> dict[str, Any]:
        """The master's JSON status page (workers, applications)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.master_ui_port}/json/", timeout=5) as answer:
            return json.loads(answer.read())

    def _wait(self, what: str, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.started:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args[-1]!r} exited with {proc.returncode} while waiting for {what};"
                                       f" logs in {self.root}")
            try:
                if ready():
                    return
            except OSError:  # the UI is not up yet
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{what} not ready after {timeout:.0f} s; logs in {self.root}")

    def start(self, timeout: float = 90.0) -> None:
        self.spawn([str(SPARK_CLASS), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                    "--port", str(self.master_port), "--webui-port", str(self.master_ui_port)], "master")
        self._wait("master", lambda: self.state().get("status") == "ALIVE", timeout)
        for n in range(self.workers):
            work_dir = self.root / "work" / f"worker{n}"
            work_dir.mkdir(parents=True, exist_ok=True)
            proc = self.spawn([str(SPARK_CLASS), "org.apache.spark.deploy.worker.Worker", self.url,
                               "--host", "127.0.0.1", "--cores", str(self.worker_cores),
                               "--memory", self.worker_memory, "--webui-port", str(free_port()),
                               "--work-dir", str(work_dir)], f"worker{n}")
            self.worker_pids.append(proc.pid)  # spark-class execs the JVM: this is the Worker JVM
        self._wait(f"{self.workers} alive workers",
                   lambda: sum(w["state"] == "ALIVE" for w in self.state()["workers"]) == self.workers, timeout)

    def executors_launched(self) -> list[str]:
        """Every executor the workers launched, as ``worker/app/executor id`` (one work folder each)."""
        return sorted(str(path.relative_to(self.root / "work")) for path in (self.root / "work").glob("worker*/app-*/*")
                      if path.is_dir() and path.name.isdigit())

    def executor_pids(self) -> list[int]:
        """Executor JVMs (CoarseGrainedExecutorBackend) whose parent is one of our Worker JVMs."""
        return sorted(pid for pid, (ppid, _, cmd) in proc_table().items()
                      if ppid in self.worker_pids and "CoarseGrainedExecutorBackend" in cmd)

    def kill_executor(self, pid: int) -> None:
        """SIGKILLs one executor JVM; its Python workers are remembered so that stop() ends them too."""
        if pid not in self.executor_pids():
            raise ValueError(f"{pid} is not an executor of this cluster")
        table = proc_table()
        self.orphans.update({child: table[child][2] for child in descendants({pid}, table) if child in table})
        os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        roots = {p.pid for p in self.started}
        table = proc_table()
        # An orphan counts only while its pid still runs the same command (pids are reused).
        orphans = {pid for pid, cmd in self.orphans.items() if pid in table and table[pid][2] == cmd}
        everything = roots | orphans | descendants(roots | orphans, table)
        groups = {table[pid][1] for pid in everything if pid in table} | roots
        groups.discard(os.getpgrp())  # never our own group
        for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            for group in groups:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(_alive(pid) for pid in everything):
                for proc in self.started:
                    proc.poll()  # reap our direct children so they do not linger as zombies
                time.sleep(0.2)
            everything = {pid for pid in everything if _alive(pid)}
            if not everything:
                break
        self.leftover = everything
        for proc in self.started:
            proc.poll()
        for log in self._logs:
            log.close()

    def __enter__(self) -> StandaloneCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    """True for a running process (a zombie waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


# ------------------------------------------------------------------------------------------ driver log

# Spark 4 writes "(127.0.0.1,executor 1, partition 3, ...)"; older versions put a space after the comma.
_STARTING = re.compile(r"Starting task (\d+)\.(\d+) in stage (\d+)\.(\d+) \(TID (\d+)\) \(([^,\s]+), ?executor (\S+?), "
                       r"partition (\d+)")
_LOST_TASK = re.compile(r"Lost task (\d+)\.(\d+) in stage (\S+) \(TID (\d+)\) \((\S+) executor (\S+)\): (\w+)")
_RESUBMITTED = re.compile(r"Resubmitted (ShuffleMapTask\(\d+, \d+\))")
_RESUBMITTING = re.compile(r"Resubmitting (.+?) (?:due to|because)")
_EXEC_REMOVED = re.compile(r"Executor (\S+) removed: (.+)")
_EXEC_LOST = re.compile(r"Lost executor (\S+) on (\S+?):? (.+)")
_GRANTED = re.compile(r"Granted executor ID (\S+) on hostPort (\S+)")


@dataclass
class RecoveryReport:
    """What the driver's log says Spark did about the killed executor."""

    lost_tasks: list[str]
    retried_tasks: list[str]
    resubmitted: list[str]
    executor_events: list[str]
    granted: int

    @classmethod
    def parse(cls, text: str) -> RecoveryReport:
        lost = [f"task {m[1]}.{m[2]} of stage {m[3]} (TID {m[4]}) on executor {m[6]}: {m[7]}"
                for m in _LOST_TASK.finditer(text)]
        # A task run again shows as a task attempt >= 1 (same stage attempt) or as any task of a stage
        # attempt >= 1 (the stage resubmitted after a fetch failure).
        retried = [f"stage {m[3]}.{m[4]} partition {m[8]} attempt {m[2]} (TID {m[5]}) on executor {m[7]}"
                   for m in _STARTING.finditer(text) if int(m[2]) >= 1 or int(m[4]) >= 1]
        resubmitted = [m[1] for m in _RESUBMITTED.finditer(text)] + \
            [f"stage {m[1]}" for m in _RESUBMITTING.finditer(text)]
        events = [f"executor {m[1]} removed: {m[2].strip()}" for m in _EXEC_REMOVED.finditer(text)] + \
            [f"lost executor {m[1]}: {m[3].strip()}" for m in _EXEC_LOST.finditer(text)]
        return cls(lost, retried, resubmitted, events, len(_GRANTED.findall(text)))

    def lines(self) -> list[str]:
        out = [f"executor events ({len(self.executor_events)}):"]
        out += [f"  {e}" for e in self.executor_events]
        out.append(f"lost tasks ({len(self.lost_tasks)}):")
        out += [f"  {t}" for t in self.lost_tasks]
        out.append(f"tasks run again ({len(self.retried_tasks)}):")
        out += [f"  {t}" for t in self.retried_tasks]
        out.append(f"resubmitted ({len(self.resubmitted)}):")
        out += [f"  {t}" for t in self.resubmitted]
        return out


def test_recovery_report_parses_spark_log_lines() -> None:
    text = "\n".join([
        "25/11/26 13:00:01 INFO TaskSetManager: Starting task 3.0 in stage 4.0 (TID 11) (127.0.0.1,executor 1, "
        "partition 3, NODE_LOCAL, 9963 bytes)",
        "25/11/26 13:00:09 ERROR TaskSchedulerImpl: Lost executor 1 on 127.0.0.1: Command exited with code 137",
        "25/11/26 13:00:09 WARN TaskSetManager: Lost task 3.0 in stage 4.0 (TID 11) (127.0.0.1 executor 1): "
        "ExecutorLostFailure (executor 1 exited caused by one of the running tasks) Reason: Command exited",
        "25/11/26 13:00:09 INFO DAGScheduler: Resubmitted ShuffleMapTask(4, 1), so marking it as still running.",
        "25/11/26 13:00:10 INFO TaskSetManager: Starting task 3.1 in stage 4.0 (TID 15) (127.0.0.1,executor 0, "
        "partition 3, NODE_LOCAL, 9963 bytes)",
        "25/11/26 13:00:11 WARN TaskSetManager: Lost task 0.0 in stage 4.0 (TID 16) (127.0.0.1 executor 2): "
        "FetchFailed(null, shuffleId=5, mapIndex=-1, mapId=-1, reduceId=4, message=",
        "25/11/26 13:00:11 INFO DAGScheduler: Resubmitting ShuffleMapStage 3 (x at y:1) and ShuffleMapStage 4 "
        "(x at y:1) due to fetch failure",
        "25/11/26 13:00:12 INFO TaskSetManager: Starting task 0.0 in stage 4.1 (TID 17) (127.0.0.1, executor 2, "
        "partition 6, NODE_LOCAL, 9963 bytes)",
        "25/11/26 13:00:10 INFO StandaloneSchedulerBackend: Granted executor ID app-1/2 on hostPort 127.0.0.1:4 "
        "with 1 core(s), 1024.0 MiB RAM",
    ])
    report = RecoveryReport.parse(text)
    assert report.lost_tasks == ["task 3.0 of stage 4.0 (TID 11) on executor 1: ExecutorLostFailure",
                                 "task 0.0 of stage 4.0 (TID 16) on executor 2: FetchFailed"]
    assert report.retried_tasks == ["stage 4.0 partition 3 attempt 1 (TID 15) on executor 0",
                                    "stage 4.1 partition 6 attempt 0 (TID 17) on executor 2"]
    assert report.resubmitted == ["ShuffleMapTask(4, 1)", "stage ShuffleMapStage 3 (x at y:1) and ShuffleMapStage 4 (x at y:1)"]
    assert report.executor_events == ["lost executor 1: Command exited with code 137"]
    assert report.granted == 1


# ---------------------------------------------------------------------------------------- GPU discovery


def _discover(path_dir: Path, **env: str) -> dict[str, Any]:
    done = subprocess.run(["/bin/bash", str(DISCOVERY)], capture_output=True, text=True, timeout=30,
                          env={"PATH": str(path_dir), **env})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _stand_in_nvidia_smi(directory: Path, body: str) -> Path:
    """An ``nvidia-smi`` for machines without one: prints what the real one prints for the index query."""
    directory.mkdir(parents=True, exist_ok=True)
    smi = directory / "nvidia-smi"
    smi.write_text(f"#!/bin/bash\n{body}\n")
    smi.chmod(0o755)
    return directory


def test_gpu_discovery_script_without_and_with_gpus(tmp_path: Path) -> None:
    assert os.access(DISCOVERY, os.X_OK)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _discover(empty) == {"name": "gpu", "addresses": []}  # no nvidia-smi at all
    two = _stand_in_nvidia_smi(tmp_path / "two", 'printf "0\\n1\\n"')
    assert _discover(two) == {"name": "gpu", "addresses": ["0", "1"]}
    # CUDA renumbers the visible devices: torch's cuda:0 is physical GPU 1 here.
    assert _discover(two, CUDA_VISIBLE_DEVICES="1") == {"name": "gpu", "addresses": ["0"]}
    assert _discover(two, CUDA_VISIBLE_DEVICES="GPU-aa,GPU-bb,GPU-cc")["addresses"] == ["0", "1"]
    assert _discover(two, CUDA_VISIBLE_DEVICES="")["addresses"] == []
    assert _discover(two, CUDA_VISIBLE_DEVICES="-1")["addresses"] == []
    # A driver problem: nvidia-smi exists but fails.
    broken = _stand_in_nvidia_smi(tmp_path / "broken", 'echo "NVIDIA-SMI has failed" >&2; exit 9')
    assert _discover(broken) == {"name": "gpu", "addresses": []}


@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="no nvidia-smi on this machine")
def test_gpu_discovery_script_on_this_machine() -> None:
    done = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                          text=True, timeout=60)
    expected = [line.strip() for line in done.stdout.splitlines() if line.strip().isdigit()] \
        if done.returncode == 0 else []
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        pytest.skip("CUDA_VISIBLE_DEVICES is set: ordinals are renumbered")
    result = json.loads(subprocess.run(["/bin/bash", str(DISCOVERY)], capture_output=True, text=True,
                                       timeout=60, check=True).stdout)
    assert result == {"name": "gpu", "addresses": expected}


# ----------------------------------------------------------------------------------------------- docker

DOCKER = REPO / "docker"


def _in_image(path: str) -> Path:
    """The checkout file that the image holds at ``path`` (the project is copied to /opt/imagequant)."""
    return REPO / Path(path).relative_to("/opt/imagequant")


def test_docker_files_refer_to_what_exists() -> None:
    import yaml

    dockerfile = (DOCKER / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    entrypoint = json.loads(dockerfile.split("ENTRYPOINT ", 1)[1].splitlines()[0])
    assert entrypoint[:2] == ["/usr/bin/tini", "--"] and os.access(_in_image(entrypoint[2]), os.X_OK)
    # SPARK_HOME in the image follows the venv layout that pyspark has here.
    assert "/.venv/lib/python${PYTHON_VERSION}/site-packages/pyspark" in dockerfile
    assert SPARK_HOME.parts[-3:] == (f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages", "pyspark")

    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())["services"]
    master_port = compose["spark-master"]["environment"]["SPARK_MASTER_PORT"]
    workers = [name for name, service in compose.items() if service.get("command", [None])[0] == "worker"]
    assert len(workers) == 2
    for name in workers:
        assert compose[name]["command"][1] == f"spark://spark-master:{master_port}"
    gpu = yaml.safe_load((DOCKER / "docker-compose.gpu.yml").read_text())["services"]
    assert set(gpu) == set(workers)
    for service in gpu.values():
        options = dict(opt.removeprefix("-D").split("=", 1) for opt in service["environment"]["SPARK_WORKER_OPTS"].split())
        assert options["spark.worker.resource.gpu.amount"] == "1"
        assert _in_image(options["spark.worker.resource.gpu.discoveryScript"]) == DISCOVERY
        assert service["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_docker_base_image_and_check() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    before_from, after_from = dockerfile.split("\nFROM ", 1)
    args = dict(line.removeprefix("ARG ").split("=", 1) for line in before_from.splitlines()
                if line.startswith("ARG ") and "=" in line)
    # Users get the official Python image of the version that SPARK_HOME names; make docker-check swaps it.
    assert args["BASE_IMAGE"] == "python:${PYTHON_VERSION}-slim-bookworm"
    assert after_from.startswith("${BASE_IMAGE}\n")
    # The build installs Debian's python3 where the base has none, and uses it by that name.
    assert "python3-venv" in after_from and "RUN python3 -m venv .venv" in after_from

    # make docker-check runs docker/check.sh (not part of make test), which runs check-in-image.sh in the image.
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^docker-check:\n\t\$\(SUDO\) bash docker/check\.sh$", makefile, re.M)
    assert "docker-check" not in re.search(r"^test:.*$", makefile, re.M).group(0)
    assert "docker/check-in-image.sh" in (DOCKER / "check.sh").read_text()
    for script in ("check.sh", "check-in-image.sh"):
        subprocess.run(["bash", "-n", str(DOCKER / script)], check=True, timeout=30)


def test_entrypoint_commands(tmp_path: Path) -> None:
    script = str(DOCKER / "entrypoint.sh")
    env = {"PATH": os.environ["PATH"], "SPARK_HOME": str(SPARK_HOME)}
    helped = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=30, env=env)
    assert helped.returncode == 0
    for command in ("master", "worker", "driver", "executor"):
        assert f"  {command}" in helped.stdout
    no_url = subprocess.run([script, "worker"], capture_output=True, text=True, timeout=30, env=env)
    assert no_url.returncode == 2 and "master URL" in no_url.stderr
    passed = subprocess.run([script, "printf", "%s", "through"], capture_output=True, text=True, timeout=30, env=env)
    assert passed.returncode == 0 and passed.stdout == "through"
    # A Kubernetes executor pod without Spark's variables fails with the variable's name, not a Java error.
    executor = subprocess.run([script, "executor"], capture_output=True, text=True, timeout=30, env=env)
    assert executor.returncode != 0 and "SPARK_EXECUTOR_MEMORY" in executor.stderr


# ----------------------------------------------------------------------------------------------- submit


def _dry_run(*args: str, env: dict[str, str] | None = None) -> list[str]:
    done = subprocess.run([str(SUBMIT), *args, "--dry-run"], capture_output=True, text=True, timeout=60,
                          cwd=REPO, env={**os.environ, "IMAGEQUANT_PYTHON": sys.executable, **(env or {})})
    assert done.returncode == 0, done.stderr
    import shlex

    return shlex.split(done.stdout)


def _confs(command: list[str]) -> list[str]:
    return [command[i + 1] for i, arg in enumerate(command) if arg == "--conf" and i + 1 < len(command)
            and "=" in command[i + 1] and command.index("--py-files") < i < _job_index(command)]


def _job_index(command: list[str]) -> int:
    return next(i for i, arg in enumerate(command) if arg.endswith("/jobs/extract_features.py"))


def _last(confs: list[str], key: str) -> str | None:
    """The value spark-submit keeps for ``key`` (the last --conf of it)."""
    values = [c.split("=", 1)[1] for c in confs if c.split("=", 1)[0] == key]
    return values[-1] if values else None


def test_submit_maps_configuration_to_spark_submit(tmp_path: Path) -> None:
    job = ["extract_features", "--catalog", "c.csv", "--store", "s"]
    plain = _dry_run(*job)
    assert plain[plain.index("--master") + 1] == "local[*]" and "--files" not in plain
    local = _dry_run(*job, "--conf", "conf/local.yaml")
    assert local[local.index("--master") + 1] == "local[2]"  # the YAML's master when --master is absent
    confs = _confs(local)
    assert _last(confs, "spark.pyspark.python") == sys.executable
    assert _last(confs, "spark.pyspark.driver.python") == sys.executable
    assert _last(confs, "spark.executorEnv.OMP_THREAD_LIMIT") == "1"
    assert _last(confs, "spark.driver.memory") == "2g"  # conf/default.yaml's spark.conf
    assert local[local.index("--files") + 1] == str(REPO / "conf" / "local.yaml")
    zip_path = Path(local[local.index("--py-files") + 1])
    assert zip_path.name.startswith("imagequant-") and zip_path.is_file()
    import zipfile

    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
    assert "imagequant/spark/extract.py" in names and not any("__pycache__" in n for n in names)
    job_args = local[_job_index(local) + 1 :]
    assert job_args[-2:] == ["--conf", str(REPO / "conf" / "local.yaml")]  # the job merges the same file
    assert job_args[-4:-2] == ["--set", "spark.master=local[2]"]  # the session uses spark-submit's master

    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text("spark:\n  master: spark://10.1.2.3:7077\n  conf:\n    spark.executor.memory: 3g\n"
                         "    spark.pyspark.python: /opt/imagequant/.venv/bin/python\n"
                         "    spark.driver.extraJavaOptions: -Dfoo=1\n")
    mine = _dry_run(*job, "--conf", str(yaml_file), "--set", "spark.conf.spark.executor.memory=5g")
    assert mine[mine.index("--master") + 1] == "spark://10.1.2.3:7077"
    assert _last(_confs(mine), "spark.executor.memory") == "5g"  # --set wins over the file
    assert _last(_confs(mine), "spark.pyspark.python") == "/opt/imagequant/.venv/bin/python"
    # The quiet log4j file and the configuration's driver JVM options both reach the driver.
    java_options = mine[mine.index("--driver-java-options") + 1].split()
    assert "-Dfoo=1" in java_options and any(o.startswith("-Dlog4j2.configurationFile=") for o in java_options)
    explicit = _dry_run(*job, "--conf", str(yaml_file), "--master", "local[1]", "--executor-python", "/x/python")
    assert explicit[explicit.index("--master") + 1] == "local[1]"
    assert _last(_confs(explicit), "spark.pyspark.python") == "/x/python"

    archive_file = tmp_path / "env.tar.gz"
    archive_file.write_bytes(b"")
    packed = _dry_run(*job, "--archive", str(archive_file), "--spark-arg", "--conf=spark.eventLog.enabled=true")
    assert packed[packed.index("--archives") + 1] == f"{archive_file}#environment"
    assert _last(_confs(packed), "spark.pyspark.python") == "./environment/bin/python"
    assert "--conf=spark.eventLog.enabled=true" in packed[: _job_index(packed)]

    cluster = _dry_run(*job, "--conf", "conf/cluster.yaml", "--master", "spark://127.0.0.1:7077")
    script = _last(_confs(cluster), "spark.executor.resource.gpu.discoveryScript")
    # The cluster configuration names the discovery script where the Docker image puts this checkout.
    assert script is not None and script.startswith("/opt/imagequant/")
    assert (REPO / Path(script).relative_to("/opt/imagequant")).resolve() == DISCOVERY.resolve()


def test_submit_rejects_bad_input_before_spark(tmp_path: Path) -> None:
    env = {**os.environ, "IMAGEQUANT_PYTHON": sys.executable}
    cases = [
        ([], "give a job: ./submit.sh JOB [options] (jobs: compact_store evaluate explain extract_features"),
        (["no_such_job"], "unknown job"),
        (["extract_features", "--conf", str(tmp_path / "missing.yaml")], "does not exist"),
        (["extract_features", "--set", "ocr.engine=nope", "--catalog", "c", "--store", "s"], "ocr.engine"),
        (["extract_features", "--executor-python", "/x", "--archive", "/y"], "exclude each other"),
        (["extract_features", "--master"], "needs a value"),
    ]
    for args, message in cases:
        done = subprocess.run([str(SUBMIT), *args], capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
        assert done.returncode == 2, (args, done.stderr)
        assert "error:" in done.stderr and message in done.stderr, (args, done.stderr)
    helped = subprocess.run([str(SUBMIT), "--help"], capture_output=True, text=True, timeout=30, cwd=REPO)
    assert helped.returncode == 0
    for option in ("--master", "--conf", "--executor-python", "--archive", "--spark-arg", "--dry-run", "--set"):
        assert option in helped.stdout
    job_help = subprocess.run([str(SUBMIT), "extract_features", "--help"], capture_output=True, text=True,
                              timeout=60, cwd=REPO, env=env)
    assert job_help.returncode == 0 and "--run-date" in job_help.stdout and "--max-failure-ratio" in job_help.stdout


# -------------------------------------------------------------------------------- standalone cluster run


@pytest.fixture(scope="module")
def cluster_catalog(image_server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~22 synthetic product images served on loopback, one missing image and one row without a link."""
    from imagequant.synthetic import generate_sample

    out = tmp_path_factory.mktemp("cluster-sample")
    labels = generate_sample(out, n_images=N_IMAGES, seed=2024, difficulty="easy", image_size=(400, 560))
    rows = []
    for record in labels.to_dict("records"):
        name = Path(record["image_link"]).name
        url = image_server.add(f"/cluster/{name}", (out / "images" / name).read_bytes())
        rows.append({**record, "image_link": url})
    rows.append({"image_link": image_server.add_fault("/cluster/missing.jpg", "status", status=404),
                 "group_id": "1", "entity_name": "item_weight", "entity_value": ""})
    rows.append({"image_link": "", "group_id": "1", "entity_name": "voltage", "entity_value": ""})
    path = out / "catalog.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _tables(store: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    images = pq.ParquetDataset(str(store / "images")).read().to_pandas()
    rows = pq.ParquetDataset(str(store / "rows")).read().to_pandas()
    return (images.sort_values("image_id").reset_index(drop=True),
            rows.sort_values("index").reset_index(drop=True))


def _count_images(folder: Path) -> int:
    return sum(1 for p in folder.glob("*.jpg") if not p.name.startswith("."))


@pytest.mark.slow
def test_standalone_cluster_survives_a_killed_executor(spark, cluster_catalog: Path, tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    started = time.perf_counter()
    local_store = tmp_path / "local-store"
    run_extract(spark, load_config(overrides=JOB_SETTINGS), str(cluster_catalog), str(local_store),
                str(tmp_path / "local-images"))
    timings["local reference run (in-process, local[2])"] = time.perf_counter() - started
    print(f"\nlocal reference run: {timings['local reference run (in-process, local[2])']:.1f} s", flush=True)

    store, images_dir = tmp_path / "cluster-store", tmp_path / "cluster-images"
    driver_err = tmp_path / "cluster" / "driver.log"
    killed: dict[str, Any] = {}
    with StandaloneCluster(tmp_path / "cluster") as cluster:
        step = time.perf_counter()
        cluster.start()
        timings["master + 2 workers up"] = time.perf_counter() - step
        env = {**cluster.env(), "IMAGEQUANT_SPARK_LOG_LEVEL": "INFO"}
        sets = [arg for s in JOB_SETTINGS + ["spark.conf.spark.ui.enabled=false",
                                            "spark.conf.spark.sql.shuffle.partitions=4"] for arg in ("--set", s)]
        step = time.perf_counter()
        driver = cluster.spawn([str(SUBMIT), "extract_features", "--master", cluster.url,
                                "--catalog", str(cluster_catalog), "--store", str(store),
                                "--images-dir", str(images_dir), "--max-failure-ratio", "0.5", *sets],
                               "driver", cwd=REPO, env=env)
        # Kill one executor JVM once the OCR stage is under way on both executors.
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and driver.poll() is None:
            executors = cluster.executor_pids()
            done = _count_images(images_dir) if images_dir.exists() else 0
            if len(executors) == 2 and done >= KILL_AFTER_IMAGES:
                cluster.kill_executor(executors[0])
                killed = {"pid": executors[0], "after_images": done, "at_s": time.perf_counter() - step}
                break
            time.sleep(0.1)
        assert killed, f"no executor was killed (driver exit {driver.poll()}); see {driver_err}"
        assert killed["after_images"] < N_IMAGES, "the OCR stage was over before the kill"
        try:
            code = driver.wait(timeout=max(10.0, deadline - time.monotonic() + 60))
        except subprocess.TimeoutExpired:
            pytest.fail(f"the cluster run did not finish; see {driver_err}")
        timings["cluster run (submit.sh -> exit)"] = time.perf_counter() - step
        predict_code = None
        if code == 0:  # predict brings the sorted predictions from the executors a partition at a time
            step = time.perf_counter()
            predicting = cluster.spawn([str(SUBMIT), "predict", "--master", cluster.url, "--catalog",
                                        str(cluster_catalog), "--store", str(store), "--model", "rules",
                                        "--out", str(tmp_path / "cluster-predictions"), *sets], "predict",
                                       cwd=REPO, env=env)
            try:
                predict_code = predicting.wait(timeout=240)
            except subprocess.TimeoutExpired:
                pytest.fail(f"predict on the cluster did not finish; see {cluster.root / 'predict.log'}")
            timings["cluster predict (submit.sh -> exit)"] = time.perf_counter() - step
        executors_after = cluster.state()
        launched = cluster.executors_launched()
    assert not cluster.leftover, f"processes still running after stop: {sorted(cluster.leftover)}"
    log_text = driver_err.read_text(errors="replace")
    report = RecoveryReport.parse(log_text)
    timings["whole test"] = time.perf_counter() - started
    summary = [line for line in log_text.splitlines() if line.startswith("extract_features:")]
    print("\n--- standalone cluster test ---")
    for name, seconds in timings.items():
        print(f"{name}: {seconds:.1f} s")
    print(f"killed executor JVM pid {killed['pid']} with SIGKILL at {killed['at_s']:.1f} s into the run, "
          f"after {killed['after_images']} of {N_IMAGES + 1} images were downloaded")
    print(f"executors launched by the workers: {launched}")
    print("\n".join(report.lines()))
    print("job summary:", summary[-1] if summary else "(none)")
    print("master after the run: completed apps",
          [(a.get("id"), a.get("state")) for a in executors_after.get("completedapps", [])])

    assert code == 0, log_text[-4000:]
    assert report.lost_tasks or report.executor_events, "Spark never noticed the lost executor"
    assert report.retried_tasks or report.resubmitted, "no task was run again after the executor was lost"
    assert len(launched) >= 3, f"the master should have started a replacement executor: {launched}"

    local_images, local_rows = _tables(local_store)
    cluster_images, cluster_rows = _tables(store)
    row_columns = ["index", "image_link", "group_id", "entity_name", "entity_value", "image_id", "row_status",
                   "row_error"]
    pd.testing.assert_frame_equal(cluster_rows[row_columns], local_rows[row_columns])
    assert cluster_images["image_id"].is_unique and len(cluster_images) == len(local_images)
    same = ["image_id", "image_link", "status", "error", "width", "height", "ocr_engine", "ocr_text", "cnn_weights"]
    pd.testing.assert_frame_equal(cluster_images[same], local_images[same])
    assert [list(t) for t in cluster_images["tok_text"]] == [list(t) for t in local_images["tok_text"]]
    assert sorted(cluster_images["status"].value_counts().items()) == [("http_status", 1), ("ok", N_IMAGES)]
    for ours, theirs in zip(cluster_images["cnn_features"], local_images["cnn_features"], strict=True):
        assert len(ours) == len(theirs)
        if len(ours):
            np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-4, atol=1e-5)
    assert predict_code == 0, (tmp_path / "cluster" / "predict.log").read_text(errors="replace")[-4000:]
    run_predict(spark, str(cluster_catalog), str(local_store), "rules", tmp_path / "local-predictions")
    cluster_predictions = pd.read_parquet(tmp_path / "cluster-predictions" / "predictions.parquet")
    assert cluster_predictions["index"].is_monotonic_increasing and len(cluster_predictions) == len(local_rows)
    pd.testing.assert_frame_equal(cluster_predictions,
                                  pd.read_parquet(tmp_path / "local-predictions" / "predictions.parquet"))
    assert ((tmp_path / "cluster-predictions" / "submission.csv").read_bytes()
            == (tmp_path / "local-predictions" / "submission.csv").read_bytes())
    # Nothing half-written is left behind (an empty _staging folder may stay).
    assert not (store / "_trash").exists()
    assert not (store / "_staging").exists() or not any((store / "_staging").iterdir())
