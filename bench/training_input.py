"""Training input: Petastorm's loader against pyarrow reading the same training table, and the share of a
training run spent in the training loop itself.

    .venv/bin/python bench/training_input.py   # BENCH_TRAIN_ROWS=6000 BENCH_TRAIN_EPOCHS=2 BENCH_REPEATS=3

A synthetic feature store (token rows made up in benchlib, random 2048-float CNN features) is written with
pyarrow exactly as the extract job lays it out; imagequant.spark.training_table.build_training_table (Spark) joins it
with the labeled catalog into the training table that training reads. Measured on that table:

* rows/s of imagequant.training.reader.iter_training_records with loader=petastorm and loader=pyarrow (the row
  dicts training consumes; best of BENCH_REPEATS) -- the goal is petastorm >= 0.8 of pyarrow;
* rows/s of the bare columnar reads straight into torch tensors (Petastorm's batch reader, pyarrow's
  read_table), for reference;
* a training run as train_from_table does it (loader=petastorm), each part timed: reading the records,
  building the examples (candidate extraction), train_model (encoding, BENCH_TRAIN_EPOCHS epochs with
  validation, checkpoint), and each one's share.
"""

from __future__ import annotations

import random
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import REPO, Result, env_int, log, run_script, synthetic_tokens, work_dir  # noqa: E402


def write_store(root: Path, rows: int, seed: int = 11) -> tuple[Path, Path]:
    """A feature store with one image per row (written with pyarrow) and its labeled catalog."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from imagequant.catalog import image_id
    from imagequant.core.schema import IMAGES, tokens_to_columns

    if root.exists():
        shutil.rmtree(root)
    rng = random.Random(seed)
    features = np.random.default_rng(seed).random((rows, 2048), dtype=np.float32)
    entities = ["item_weight", "voltage", "wattage", "item_volume", "width", "height", "depth",
                "maximum_weight_recommendation"]
    records, labeled = [], []
    for i in range(rows):
        entity = entities[i % len(entities)]
        tokens, size, label = synthetic_tokens(rng, entity, rng.random() > 0.1)
        link = f"https://images.example.com/bench/{seed}-{i}.jpg"
        records.append({
            "image_id": image_id(link), "image_link": link, "status": "ok", "error": "", "source": "cache",
            "width": size[0], "height": size[1], "ocr_engine": "synthetic", **tokens_to_columns(tokens),
            "ocr_text": " ".join(t.text for t in tokens), "cnn_weights": "random(seed=0)",
            "cnn_features": features[i], "seconds_fetch": 0.0, "seconds_decode": 0.0, "seconds_ocr": 0.0,
            "seconds_cnn": 0.0, "run_id": "bench", "processed_at": "2024-01-01T00:00:00.000+00:00",
        })
        labeled.append({"image_link": link, "group_id": str(i // 4), "entity_name": entity, "entity_value": label})
    part = root / "store" / "images" / "batch=bench"
    part.mkdir(parents=True)
    schema = IMAGES.arrow_schema()
    step = 2000
    for n, start in enumerate(range(0, rows, step)):
        table = pa.Table.from_pylist(records[start : start + step], schema)
        pq.write_table(table, part / f"part-{n:05d}.parquet", compression="zstd")
    catalog = root / "labeled.csv"
    pd.DataFrame(labeled).to_csv(catalog, index=False)
    return root / "store", catalog


def _layout(path: Path) -> dict[str, int]:
    """Files and row groups of the table: Petastorm reads row groups in parallel, one per worker thread."""
    import pyarrow.parquet as pq

    files = sorted(path.rglob("*.parquet"))
    return {"files": len(files), "row_groups": sum(pq.ParquetFile(f).metadata.num_row_groups for f in files)}


def time_records(path: Path, loader: str) -> tuple[int, float]:
    """Rows and seconds to consume every record of the training table through training.py's loader."""
    from imagequant.training.reader import iter_training_records

    started = time.perf_counter()
    count = 0
    checksum = 0.0
    first = 0.0
    for record in iter_training_records(path, loader):
        if not count:
            first = time.perf_counter() - started
        count += 1
        checksum += float(record["cnn_features"][0])  # touch the features, as example building does
    _FIRST[loader] = min(_FIRST.get(loader, first), first)
    return count, time.perf_counter() - started


_FIRST: dict[str, float] = {}  # seconds to the first record (opening the reader), best seen per loader


def time_tensors_petastorm(path: Path) -> tuple[int, float]:
    """Petastorm's batch reader, each batch's CNN features stacked into one torch tensor."""
    import numpy as np
    import torch
    from petastorm import make_batch_reader

    started = time.perf_counter()
    count = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with make_batch_reader(path.resolve().as_uri(), reader_pool_type="thread", workers_count=2, num_epochs=1,
                               shuffle_row_groups=False, schema_fields=["index", "cnn_features"]) as reader:
            for batch in reader:
                tensor = torch.from_numpy(np.ascontiguousarray(np.stack(batch.cnn_features)).astype(np.float32))
                count += tensor.shape[0]
    return count, time.perf_counter() - started


def time_tensors_pyarrow(path: Path) -> tuple[int, float]:
    """pyarrow's read_table, the features column flattened and reshaped into one torch tensor."""
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    started = time.perf_counter()
    table = pq.read_table(str(path), columns=["index", "cnn_features"])
    count = 0
    for batch in table.to_batches():
        flat = batch.column(1).flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        tensor = torch.from_numpy(flat.reshape(-1, 2048).copy())  # own the memory, as a training batch would
        count += tensor.shape[0]
    return count, time.perf_counter() - started


def best(fn: Any, path: Path, repeats: int, *args: Any) -> dict[str, Any]:
    times = []
    count = 0
    for _ in range(repeats):
        count, seconds = fn(path, *args)
        times.append(seconds)
    fastest = min(times)
    return {"rows": count, "seconds": [round(t, 3) for t in times], "rows_per_s": round(count / fastest, 1)}


def main() -> int:
    rows = env_int("BENCH_TRAIN_ROWS", 6000)
    epochs = env_int("BENCH_TRAIN_EPOCHS", 2)
    repeats = env_int("BENCH_REPEATS", 3)
    result = Result("training_input", "Training input: Petastorm against pyarrow; the training step's share")
    result.params = {"rows": rows, "epochs": epochs, "repeats": repeats}
    root = work_dir("training")
    log(f"training_input: writing a synthetic store of {rows} rows")
    store, catalog = write_store(root / "data", rows)

    from imagequant.config import load_config
    from imagequant.core.locations import local_path
    from imagequant.spark.session import build_session
    from imagequant.spark.training_table import build_training_table

    config = load_config([REPO / "conf" / "local.yaml"],
                         ["spark.conf.spark.ui.enabled=false", f"train.epochs={epochs}", "train.export=false",
                          "train.loader=petastorm"])
    spark = build_session(config, "imagequant-bench-training-input")
    try:
        started = time.perf_counter()
        table = build_training_table(spark, [catalog], store)
        table_s = time.perf_counter() - started
        table_path = local_path(table.uri)
    finally:
        spark.stop()
    result.details["training_table"] = {"path": str(table_path), "rows": table.rows, "usable": table.usable_rows,
                                        "seconds_to_build": round(table_s, 2),
                                        "bytes": sum(f.stat().st_size for f in table_path.rglob("*.parquet")),
                                        **_layout(table_path)}
    log(f"training table: {table.rows} rows in {table_s:.1f} s")

    loaders = {name: best(time_records, table_path, repeats, name) for name in ("petastorm", "pyarrow")}
    tensors = {"petastorm": best(time_tensors_petastorm, table_path, repeats),
               "pyarrow": best(time_tensors_pyarrow, table_path, repeats)}
    result.details["records"] = loaders
    result.details["tensors"] = tensors
    p, a = loaders["petastorm"]["rows_per_s"], loaders["pyarrow"]["rows_per_s"]
    result.add("training input", "petastorm loader, rows/s (training.py records)", p, "rows/s", digits=0)
    result.add("training input", "pyarrow loader, rows/s (training.py records)", a, "rows/s", digits=0)
    result.add("training input", "petastorm / pyarrow rows/s", p / a if a else None, "x", goal=(">=", 0.8),
               note=f"{table.rows} rows in {result.details['training_table']['row_groups']} row group(s), best of {repeats}")
    result.details["seconds_to_first_record"] = {k: round(v, 3) for k, v in _FIRST.items()}
    tp, ta = tensors["petastorm"]["rows_per_s"], tensors["pyarrow"]["rows_per_s"]
    result.add("training input", "straight into tensors: petastorm / pyarrow rows/s", tp / ta if ta else None, "x",
               note=f"{tp:.0f} vs {ta:.0f} rows/s (CNN features only)")

    # The training job's parts, timed one by one with training.py's own functions (as train_from_table runs them).
    from imagequant.training.examples import examples_from_records, split_by_group
    from imagequant.training.fit import train_model
    from imagequant.training.reader import iter_training_records

    out = root / "model"
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    records = list(iter_training_records(table_path, config.train.loader))
    t1 = time.perf_counter()
    examples, _skipped = examples_from_records(records)
    settings = config.train
    train, val = split_by_group(examples, settings.val_fraction, settings.seed)
    t2 = time.perf_counter()
    trained = train_model(train, val, config.model, settings, out, progress=False)
    t3 = time.perf_counter()
    m = trained.metrics
    read_s, examples_s, train_s, total = t1 - t0, t2 - t1, t3 - t2, t3 - t0
    result.details["training_run"] = {
        "loader": config.train.loader, "read_s": round(read_s, 3), "examples_s": round(examples_s, 3),
        "train_model_s": round(train_s, 3), "total_s": round(total, 3), "epochs_run": m["epochs_run"],
        "train_rows": m["train_rows"], "val_rows": m["val_rows"], "validation_f1": m["validation"]["f1"],
    }
    per_epoch = train_s / max(1, m["epochs_run"])
    configured = load_config().train.epochs
    at_configured = configured * per_epoch / (read_s + examples_s + configured * per_epoch)
    result.details["training_run"]["share_at_configured_epochs_extrapolated"] = round(at_configured, 4)
    result.add("training", "training loop (train_model) share of the run", 100 * train_s / total, "%", digits=1,
               note=f"{train_s:.1f} s of {total:.1f} s; {m['epochs_run']} epochs of {m['train_rows']} rows, "
                    f"{per_epoch:.1f} s/epoch incl. validation; at train.epochs={configured} "
                    f"~{100 * at_configured:.0f}% (extrapolated)")
    result.add("training", f"{config.train.loader} read share of the run", 100 * read_s / total, "%", digits=1,
               note=f"{read_s:.2f} s reading; {examples_s:.2f} s building examples (candidates)")
    result.write()
    return 0


if __name__ == "__main__":
    run_script(main)
