"""Nightly back-fills: ``--run-date`` partitions, reruns that replace a date atomically and identically,
catalogs that grow (only new images are processed), ``--max-failure-ratio``, and safe fetching at job level.

One store goes through a night-by-night history (module fixture ``history``), run in-process with the
session's ``spark``; one command-line run through ``./submit.sh`` (local mode) checks the exit status.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from imagequant.config import load_config
from imagequant.spark.extract import ExtractSummary, run_extract
from imagequant.spark.store import read_images

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

SETTINGS = [
    "fetch.allow_loopback=true", "fetch.connect_timeout_s=2", "fetch.read_timeout_s=5", "fetch.max_retries=1",
    "fetch.backoff_s=0.05", "fetch.max_backoff_s=0.2", "spark.image_partitions_per_core=2",
    # Back-fill bookkeeping does not depend on OCR quality or CNN features: keep the runs cheap.
    "ocr.rotated_pass=false", "ocr.second_pass=false", "imaging.ocr_min_side=600", "cnn.enabled=false",
]
D1, D2, D3 = "2024-05-01", "2024-05-02", "2024-05-03"
# Columns that are the same whenever the same image is processed again (not timings, run ids or source).
CONTENT = ["image_id", "image_link", "status", "error", "width", "height", "ocr_engine", "ocr_text", "tok_text",
           "tok_left", "tok_top", "cnn_weights"]
ROW_CONTENT = ["index", "image_link", "group_id", "entity_name", "entity_value", "image_id", "row_status",
               "row_error"]


def _partition(store: Path, table: str, name: str) -> pd.DataFrame:
    frame = pq.ParquetDataset(str(store / table / name)).read().to_pandas()
    key = "image_id" if table == "images" else "index"
    return frame.sort_values(key).reset_index(drop=True)


def _content(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    out = frame[columns].copy()
    for column in columns:  # lists compare as tuples
        if out[column].map(lambda v: hasattr(v, "__len__") and not isinstance(v, str)).any():
            out[column] = out[column].map(tuple)
    return out


def _partitions(store: Path, table: str) -> list[str]:
    return sorted(p.name for p in (store / table).iterdir() if p.is_dir())


def _no_leftovers(store: Path) -> bool:
    """No half-written output and no swapped-out partition is left (empty bookkeeping folders may stay)."""
    return not any(path.is_file() or "=" in path.name
                   for folder in ("_staging", "_trash") for path in (store / folder).rglob("*"))


def _hits(server: Any, prefix: str) -> dict[str, int]:
    return {path: n for path, n in server.hits.items() if path.startswith(prefix)}


@pytest.fixture(scope="module")
def catalogs(image_server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Catalog A (5 images + one that is missing on night 1), catalog B = A + 3 new images, and
    A + one image whose server hangs (to interrupt a rerun)."""
    from imagequant.synthetic import generate_sample

    out = tmp_path_factory.mktemp("backfill-sample")
    labels = generate_sample(out, n_images=8, seed=77, difficulty="easy", image_size=(400, 560))
    names = list(dict.fromkeys(Path(link).name for link in labels["image_link"]))
    urls = {name: image_server.add(f"/backfill/{name}", (out / "images" / name).read_bytes()) for name in names}
    records = [{**r, "image_link": urls[Path(r["image_link"]).name]} for r in labels.to_dict("records")]
    first, new = set(names[:5]), set(names[5:])
    late = {"image_link": image_server.add_fault("/backfill/late.jpg", "status", status=404), "group_id": "5",
            "entity_name": "item_weight", "entity_value": "250 gram"}
    hang = {"image_link": image_server.add_fault("/backfill/hang.jpg", "slow", delay=60.0), "group_id": "5",
            "entity_name": "item_weight", "entity_value": ""}
    a = [r for r in records if Path(r["image_link"]).name in first] + [late]
    b = a + [r for r in records if Path(r["image_link"]).name in new]
    paths = {}
    for name, rows in (("a", a), ("b", b), ("a_hang", a + [hang])):
        paths[name] = out / f"catalog_{name}.csv"
        pd.DataFrame(rows).to_csv(paths[name], index=False)
    late_body = (out / "images" / names[0]).read_bytes()
    return {"paths": paths, "a": a, "b": b, "first": first, "new": new, "late_body": late_body,
            "late_path": "/backfill/late.jpg", "hang_path": "/backfill/hang.jpg"}


def _run(spark: Any, catalog: Path, store: Path, run_date: str | None, **overrides: str) -> ExtractSummary:
    config = load_config(overrides=SETTINGS + [f"{k}={v}" for k, v in overrides.items()])
    return run_extract(spark, config, str(catalog), str(store), None, run_date)


def _interrupted_rerun(spark: Any, image_server: Any, catalog: Path, store: Path, hang_path: str) -> BaseException:
    """Reruns D1 and cancels the Spark job while one image's server hangs: a run that dies before commit."""
    failure: list[BaseException] = []

    def rerun() -> None:
        try:
            _run(spark, catalog, store, D1, **{"fetch.read_timeout_s": "90"})
        except BaseException as exc:  # noqa: BLE001 - whatever the cancelled job raises is the result
            failure.append(exc)

    worker = threading.Thread(target=rerun, name="interrupted-rerun")
    worker.start()
    deadline = time.monotonic() + 120
    while image_server.hits[hang_path] == 0 and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    spark.sparkContext.cancelAllJobs()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the interrupted rerun did not end"
    assert failure, "the rerun finished although its job was cancelled"
    return failure[0]


@pytest.fixture(scope="module")
def history(spark, image_server, catalogs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Night 1 (D1) on catalog A; an interrupted rerun of D1; a clean rerun of D1; night 2 (D2) on
    catalog B with the missing image now served; a crash in the middle of a partition swap; night 3 (D3)."""
    store = tmp_path_factory.mktemp("backfill") / "store"
    paths = catalogs["paths"]
    state: dict[str, Any] = {"store": store}

    state["d1"] = _run(spark, paths["a"], store, D1)
    state["d1_images"] = _partition(store, "images", f"batch={D1}")
    state["d1_rows"] = _partition(store, "rows", f"run_date={D1}")
    state["hits_after_d1"] = _hits(image_server, "/backfill/")

    state["interrupted"] = _interrupted_rerun(spark, image_server, paths["a_hang"], store, catalogs["hang_path"])
    state["after_interrupt_images"] = _partition(store, "images", f"batch={D1}")
    state["after_interrupt_rows"] = _partition(store, "rows", f"run_date={D1}")
    state["manifest_after_interrupt"] = json.loads((store / "_manifest.json").read_text())["runs"]

    state["d1_rerun"] = _run(spark, paths["a"], store, D1)
    state["d1_rerun_images"] = _partition(store, "images", f"batch={D1}")
    state["d1_rerun_rows"] = _partition(store, "rows", f"run_date={D1}")
    state["hits_before_d2"] = _hits(image_server, "/backfill/")

    image_server.add(catalogs["late_path"], catalogs["late_body"])  # the missing image appears on night 2
    state["d2"] = _run(spark, paths["b"], store, D2)
    state["hits_after_d2"] = _hits(image_server, "/backfill/")
    state["d2_images"] = _partition(store, "images", f"batch={D2}")

    # A crash between moving D1's old partition aside and moving the new one in: the state
    # commit_partition leaves in that window. The next run must put D1 back before it reads the store.
    (store / "_trash" / "images").mkdir(parents=True)
    (store / "images" / f"batch={D1}").rename(store / "_trash" / "images" / f"batch={D1}")
    state["d3"] = _run(spark, paths["b"], store, D3)
    state["hits_after_d3"] = _hits(image_server, "/backfill/")
    return state


def test_each_run_date_is_its_own_partition(history, catalogs) -> None:
    store = history["store"]
    assert _partitions(store, "images") == [f"batch={D1}", f"batch={D2}", f"batch={D3}"]
    assert _partitions(store, "rows") == [f"run_date={D1}", f"run_date={D2}", f"run_date={D3}"]
    for name, catalog in ((f"run_date={D1}", "a"), (f"run_date={D2}", "b"), (f"run_date={D3}", "b")):
        rows = _partition(store, "rows", name)
        assert list(rows["index"]) == list(range(len(catalogs[catalog]))), name  # every row once
    manifest = json.loads((store / "_manifest.json").read_text())["runs"]
    assert [run["batch"] for run in manifest] == [D1, D2, D3]  # the rerun of D1 replaced its entry
    assert manifest[0]["run_id"] == history["d1_rerun"].run_id
    assert _no_leftovers(store)


def test_rerun_of_a_date_replaces_it_with_identical_results(history, catalogs) -> None:
    first, rerun = history["d1_images"], history["d1_rerun_images"]
    assert history["d1"].processed == history["d1_rerun"].processed == len(catalogs["first"]) + 1
    assert len(rerun) == len(first) and rerun["image_id"].is_unique  # replaced, not appended
    pd.testing.assert_frame_equal(_content(rerun, CONTENT), _content(first, CONTENT))
    assert set(rerun["run_id"]) == {history["d1_rerun"].run_id} != set(first["run_id"])
    rows_first, rows_rerun = history["d1_rows"], history["d1_rerun_rows"]
    assert len(rows_rerun) == len(catalogs["a"])
    pd.testing.assert_frame_equal(rows_rerun[ROW_CONTENT], rows_first[ROW_CONTENT])
    assert set(rows_rerun["run_id"]) == {history["d1_rerun"].run_id}


def test_interrupted_rerun_leaves_the_previous_partition_untouched(history) -> None:
    # The rerun died in the middle of its OCR stage: readers still see night 1's partition, whole.
    pd.testing.assert_frame_equal(history["after_interrupt_images"], history["d1_images"])
    pd.testing.assert_frame_equal(history["after_interrupt_rows"], history["d1_rows"])
    assert isinstance(history["interrupted"], Exception)
    # Whatever it had begun writing went to _staging only, invisible to readers; the next run swept it away.
    # The manifest still describes night 1's first run: an interrupted run records nothing.
    assert [(r["batch"], r["run_id"]) for r in history["manifest_after_interrupt"]] == [(D1, history["d1"].run_id)]
    assert _no_leftovers(history["store"])


def test_new_catalog_rows_process_only_their_new_images(history, catalogs, spark) -> None:
    d2: ExtractSummary = history["d2"]
    # New images plus the one that failed on night 1; the five good images of night 1 are not touched.
    assert d2.processed == len(catalogs["new"]) + 1
    assert d2.already_ok == len(catalogs["first"])
    assert d2.store_ok == d2.distinct_images == len(catalogs["first"]) + len(catalogs["new"]) + 1
    before, after = history["hits_before_d2"], history["hits_after_d2"]
    for name in catalogs["first"]:
        assert after[f"/backfill/{name}"] == before[f"/backfill/{name}"], name
    for name in catalogs["new"]:
        assert after[f"/backfill/{name}"] == 1, name
    assert {Path(link).name for link in history["d2_images"]["image_link"]} == catalogs["new"] | {"late.jpg"}
    assert set(history["d2_images"]["status"]) == {"ok"}
    view = read_images(spark, str(history["store"])).toPandas()
    assert view["image_id"].is_unique and len(view) == d2.distinct_images
    late = view[view["image_link"].str.endswith("/late.jpg")].iloc[0]
    assert late["status"] == "ok" and late["batch"] == D2  # the later success wins over night 1's failure
    d1_late = history["d1_images"][history["d1_images"]["image_link"].str.endswith("/late.jpg")].iloc[0]
    assert d1_late["status"] == "http_status"


def test_predict_reads_a_nights_rows_from_the_store_as_from_its_catalog(history, catalogs, spark, tmp_path) -> None:
    from imagequant.errors import UsageError
    from imagequant.spark.inference import run_predict
    from imagequant.spark.store import read_rows

    store = str(history["store"])
    rows = read_rows(spark, store, D2)
    assert len(rows) == len(catalogs["b"]) and list(rows["index"]) == list(range(len(rows)))
    from_store = run_predict(spark, rows, store, "rules", tmp_path / "from_store")
    from_catalog = run_predict(spark, catalogs["paths"]["b"], store, "rules", tmp_path / "from_catalog")
    assert from_store.rows == from_catalog.rows == len(rows) and not from_store.problems
    a = pq.read_table(tmp_path / "from_store" / "predictions.parquet").to_pandas()
    b = pq.read_table(tmp_path / "from_catalog" / "predictions.parquet").to_pandas()
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(UsageError, match="no catalog rows of run '1999-01-01'.*2024-05-01"):
        read_rows(spark, store, "1999-01-01")


def test_crashed_partition_swap_is_recovered_and_nothing_is_redone(history, catalogs) -> None:
    d3: ExtractSummary = history["d3"]
    # Recovery put D1 back before the store was read, so night 3 found every image already done.
    assert d3.processed == 0 and d3.already_ok == d3.distinct_images == d3.store_ok
    assert history["hits_after_d3"] == history["hits_after_d2"]
    restored = _partition(history["store"], "images", f"batch={D1}")
    pd.testing.assert_frame_equal(restored, history["d1_rerun_images"])
    assert len(_partition(history["store"], "images", f"batch={D3}")) == 0


# ------------------------------------------------------------------------- command line: exit status 1


def _outbound_address() -> str | None:
    """This machine's non-loopback IPv4 address (the one a default route would use), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 9))  # UDP connect sends nothing; it only picks a route
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if ipaddress.ip_address(address).is_loopback else address


class CountingListener:
    """A TCP listener that only counts the connections made to it."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def private_listener() -> Iterator[CountingListener | None]:
    address = _outbound_address()
    if address is None or ipaddress.ip_address(address).is_global:
        yield None  # no private interface address to listen on: that row is left out
        return
    listener = CountingListener(address)
    yield listener
    listener.close()


def test_cli_exits_1_above_max_failure_ratio_after_writing_everything(
    image_server, catalogs, tmp_path: Path, private_listener: CountingListener | None
) -> None:
    by_link = {r["image_link"]: r for r in catalogs["a"] if Path(r["image_link"]).name in catalogs["first"]}
    good = list(by_link.values())[:2]  # two distinct images
    refused = ["http://10.0.0.1/x.jpg", "http://169.254.169.254/latest/meta-data/iam/security-credentials/"]
    if private_listener is not None:
        refused.append(f"http://{private_listener.sock.getsockname()[0]}:{private_listener.port}/x.jpg")
    rows = good + [{"image_link": link, "group_id": "7", "entity_name": "voltage", "entity_value": ""}
                   for link in [image_server.url("/backfill/gone.jpg"), *refused]]
    image_server.add_fault("/backfill/gone.jpg", "status", status=404)
    catalog = tmp_path / "catalog.csv"
    pd.DataFrame(rows).to_csv(catalog, index=False)
    store = tmp_path / "store"
    # Default fetch settings except loopback (the test server); cheap OCR; local mode through submit.sh.
    sets = ["fetch.allow_loopback=true", "cnn.enabled=false", "ocr.rotated_pass=false", "ocr.second_pass=false",
            "imaging.ocr_min_side=600", "spark.conf.spark.ui.enabled=false"]
    env = {**os.environ, "IMAGEQUANT_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    started = time.perf_counter()
    done = subprocess.run(
        [str(REPO / "submit.sh"), "extract_features", "--master", "local[2]", "--catalog", str(catalog),
         "--store", str(store), "--run-date", "2024-06-01", "--max-failure-ratio", "0.25",
         *[arg for s in sets for arg in ("--set", s)]],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    print(f"\nsubmit.sh local[2] run: {time.perf_counter() - started:.1f} s")
    # spark-submit runs the Python driver with its stderr merged into stdout: look at both.
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "error:" in output and "above --max-failure-ratio" in output
    assert "Traceback" not in output
    # Everything was written before the exit status said the run failed.
    images = _partition(store, "images", "batch=2024-06-01").set_index("image_link")
    assert len(images) == len(rows)
    assert (images.loc[[r["image_link"] for r in good], "status"] == "ok").all()
    assert images.loc[image_server.url("/backfill/gone.jpg"), "status"] == "http_status"
    # Safe fetching at job level: refused before any connection, so in no time and nothing accepted.
    for link in refused:
        assert images.loc[link, "status"] == "refused_address", (link, images.loc[link, "error"])
        assert images.loc[link, "seconds_fetch"] < 1.0
    if private_listener is not None:
        assert private_listener.accepted == 0
    assert len(_partition(store, "rows", "run_date=2024-06-01")) == len(rows)
    manifest = json.loads((store / "_manifest.json").read_text())["runs"]
    assert manifest[-1]["batch"] == "2024-06-01" and sum(manifest[-1]["failed"].values()) == len(rows) - 2


def test_cli_rejects_a_bad_run_date(tmp_path: Path, catalogs) -> None:
    for value in ("2024-5-1", "yesterday"):
        done = subprocess.run([sys.executable, str(REPO / "jobs" / "extract_features.py"), "--catalog",
                               str(catalogs["paths"]["a"]), "--store", str(tmp_path / "s"), "--run-date", value],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "--run-date must be YYYY-MM-DD" in done.stderr, done.stderr
    done = subprocess.run([sys.executable, str(REPO / "jobs" / "extract_features.py"), "--catalog",
                           str(catalogs["paths"]["a"]), "--store", str(tmp_path / "s"), "--max-failure-ratio", "1.5"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--max-failure-ratio" in done.stderr
    assert not (tmp_path / "s").exists()
