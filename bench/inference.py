"""Inference: rows per second of the learned model, eager against exported (torch.export program,
model.pt2), on the same encoded rows, with one torch thread as each Spark predict task uses.

    .venv/bin/python bench/inference.py   # BENCH_INFER_ROWS=2048 BENCH_REPEATS=3 [BENCH_MODEL_DIR=DIR]

The model is BENCH_MODEL_DIR when given, else one trained in a few seconds on synthetic token rows (see
benchlib.quick_model). The rows are synthetic token rows with random CNN features, encoded once; both
models then score exactly those arrays (LoadedModel.probabilities, as predict does: eager in chunks of 64
rows padded to the chunk's longest row, exported in its fixed batch padded to max_tokens and
max_candidates). Two row sets: short rows (~25 tokens) and long rows (~100+ tokens, busy packaging).
Encoding is timed separately: both pay it.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import Result, env_int, log, quick_model, run_script, synthetic_tokens  # noqa: E402


def main() -> int:
    import numpy as np
    import torch

    from imagequant.scoring.checkpoint import load_model

    rows = env_int("BENCH_INFER_ROWS", 2048)
    repeats = env_int("BENCH_REPEATS", 3)
    threads = env_int("BENCH_INFER_THREADS", 1)
    torch.set_num_threads(threads)
    result = Result("inference", "Inference: eager against exported model")
    model_dir = quick_model()
    eager = load_model(model_dir, exported=False)
    exported = load_model(model_dir, exported=True)
    result.params = {"rows": rows, "repeats": repeats, "torch_threads": torch.get_num_threads(),
                     "model_dir": str(model_dir), "export_batch": eager.params.export_batch,
                     "max_tokens": eager.params.max_tokens, "max_candidates": eager.params.max_candidates}

    # Short rows (about the synthetic training rows) and long rows (near max_tokens, like busy packaging):
    # the exported program always pads to max_tokens x max_candidates, eager pads to the chunk's longest row.
    for kind, filler in (("short", (3, 8)), ("long", (30, 40))):
        rng = random.Random(17)
        entities = list(eager.params.entities)
        started = time.perf_counter()
        encoded = []
        for i in range(rows):
            entity = entities[i % len(entities)]
            tokens, size, _ = synthetic_tokens(rng, entity, filler_lines=filler)
            cnn = np.random.default_rng([17, i]).random(2048, dtype=np.float32)
            encoded.append(eager.encode(tokens, size, entity, cnn))
        encode_s = time.perf_counter() - started
        lengths = [len(e.token_ids) for e in encoded]
        median_tokens = float(np.median(lengths))
        log(f"inference: {rows} {kind} rows (median {median_tokens:.0f} tokens) encoded in {encode_s:.1f} s")

        timings: dict[str, list[float]] = {"eager": [], "exported": []}
        outputs = {}
        for _ in range(repeats):
            for name, model in (("eager", eager), ("exported", exported)):
                t0 = time.perf_counter()
                outputs[name] = model.probabilities(encoded)
                timings[name].append(time.perf_counter() - t0)
        rate = {name: rows / min(times) for name, times in timings.items()}
        pairs = list(zip(outputs["eager"], outputs["exported"], strict=True))
        diff = max(float(np.max(np.abs(a - b))) for a, b in pairs)
        same = sum(int(np.argmax(a) == np.argmax(b)) for a, b in pairs)
        result.details[kind] = {"median_tokens": median_tokens, "max_tokens_seen": max(lengths),
                                "seconds": {k: [round(t, 3) for t in v] for k, v in timings.items()},
                                "rows_per_s": {k: round(v, 1) for k, v in rate.items()},
                                "encode_s": round(encode_s, 3), "max_abs_probability_difference": diff,
                                "same_best_option": same}
        label = f"{kind} rows ({median_tokens:.0f} tokens)"
        result.add("inference", f"eager model, {label}, rows/s", rate["eager"], "rows/s", digits=0)
        result.add("inference", f"exported model, {label}, rows/s", rate["exported"], "rows/s", digits=0)
        result.add("inference", f"exported / eager rows/s, {label}", rate["exported"] / rate["eager"], "x",
                   note=f"best of {repeats}; max probability difference {diff:.1e}; same best option on {same}/{rows} rows")
        result.add("inference", f"encoding (both pay it), {label}, rows/s", rows / encode_s, "rows/s", digits=0,
                   note="tokens -> arrays incl. candidate extraction and rule features")
    result.write()
    return 0


if __name__ == "__main__":
    run_script(main)
