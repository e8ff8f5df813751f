"""Runs the benchmarks in order, each in its own subprocess with a timeout, prints one summary table
(stage, figure, value, goal, met?), writes bench/results/<name>.json (each script) and
bench/results/summary.json, writes the full results table into docs/benchmarks.md between the markers
``<!-- bench:start -->`` and ``<!-- bench:end -->``, and a short headline table (HEADLINE: one row per figure,
each naming the run it came from) into README.md between ``<!-- bench-headline:start -->`` and
``<!-- bench-headline:end -->``.

    .venv/bin/python bench/run_all.py                 # all of them (make bench)
    .venv/bin/python bench/run_all.py scaling dedup   # some; the table still shows every stored result
    .venv/bin/python bench/run_all.py --table-only    # rebuild summary and both tables from stored results

Sizes come from environment knobs (see bench/README.md); timeouts from BENCH_TIMEOUT_<NAME> (seconds).
Each script's full output goes to a log file in the work folder; only its figures and progress are echoed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    BENCH,
    KEPT_STORED_EXIT,
    MODEL_CPU_FLAGS,
    REPO,
    RESULTS,
    env_int,
    machine_facts,
    work_dir,
)

# Run statuses that are not failures: measured, or nothing to measure here and the stored result kept.
SUCCEEDED = ("ok", "kept")
# Why a script kept its stored result (exit 75), where it is not "no GPU here".
KEPT_REASONS = {"scale": ("a dry run (below 1,000 images, figures in scale_dryrun.json) or changed settings "
                          "(BENCH_SCALE_SET, figures in scale_<setting>-<value>.json) in this run: stored figures below")}

# (name, default timeout in seconds): the order of the list.
BENCHMARKS: list[tuple[str, int]] = [
    ("stages", 900),
    # About 5 minutes at 60 real images (281 s on 2026-12-05): the default reader, without its second look, and
    # two other runtimes.
    ("ocr_breakdown", 900),
    ("scaling", 1200),
    ("ocr_cost", 900),
    ("training_input", 600),
    ("dedup", 600),
    ("gpu_cnn", 600),
    ("inference", 600),
    ("compaction", 600),
    # About 17 minutes on this 2-core machine at the default 1,000 + 100 images (the whole job ~1.2 CPU s per
    # image, RapidOCR 0.74 of it), ~20 the first time (it renders its images), more when the machine is shared.
    ("scale", 1800),
]
README = REPO / "README.md"
FULL_TABLE = REPO / "docs" / "benchmarks.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
HEADLINE_START, HEADLINE_END = "<!-- bench-headline:start -->", "<!-- bench-headline:end -->"
# The README's headline rows: (benchmark, the start of its figure's text, the label shown in the README).
HEADLINE: list[tuple[str, str, str]] = [
    ("stages", "OCR rapidocr, median CPU s/image", "OCR (RapidOCR), median CPU s per image on one core"),
    ("stages", "OCR tesseract, median CPU s/image", "OCR (Tesseract), median CPU s per image on one core"),
    ("stages", "ResNet-50 CPU, batch 32, 1 thread", "ResNet-50 on the CPU, batch 32, one thread, ms per image"),
    ("stages", "OCR (rapidocr) share", "OCR's share of one image's time on one core"),
    ("scaling", "local[2] / loop throughput, whole job", "local[2] / single-process loop, whole job"),
    ("scaling", "local[1] / loop throughput, whole job", "local[1] / single-process loop, whole job"),
    ("scale", "first run: images/s (job time)", "extract on 2 cores (`local[2]`), images/s"),
    ("scale", "whole job: CPU seconds per image", "extract, CPU s per image (all processes)"),
    ("scale", "incremental run time / first run time", "incremental run (only new images) / first run, time"),
    ("scale", "peak RSS per Python worker", "peak RSS per Python worker"),
    ("scale", "1M images, CPU executors: core-hours", "1M images on CPU executors, core-hours"),
    ("scale", "1M images, CPU executors: cores to finish in 8 h", "1M images on CPU executors, cores for 8 h"),
    ("training_input", "petastorm / pyarrow rows/s", "training input, Petastorm / pyarrow rows/s"),
    ("gpu_cnn", "UDF / bare loop bf16", "CNN on an H100: Spark function / bare torch loop"),
    ("compaction", "predict (rules), whole Spark part", "predict, before / after compacting 30 nightly batches"),
]
# Console noise from Spark and the JVM; it still goes to the log file.
_NOISE = ("[Stage ", "WARN ", "WARNING: Using incubator", "Using Spark's default log4j", "Setting default log level",
          "To adjust logging level", "SLF4J")


def run_one(name: str, timeout: int) -> dict[str, Any]:
    """Runs bench/<name>.py; returns its status and seconds (the figures are in its JSON file)."""
    log_path = work_dir("logs") / f"{name}.log"
    env = dict(os.environ)
    env.setdefault("OMP_THREAD_LIMIT", "1")  # as make exports it: one thread per Tesseract
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("IMAGEQUANT_SPARK_LOG_LEVEL", "ERROR")
    env["PYTHONUNBUFFERED"] = "1"
    started = time.time()
    print(f"\n[bench] === {name} (timeout {timeout} s; log {log_path})", flush=True)
    status = "ok"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, str(BENCH / f"{name}.py")], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env, cwd=str(REPO), start_new_session=True)

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                text = line.replace("\r", "\n").strip()
                if text and not any(n in text for n in _NOISE):
                    print(line.rstrip(), flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # The whole process group: Spark's JVM and Python workers, OCR pool workers, Tesseract children.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            status = "timeout"
        reader.join(timeout=10)
    seconds = round(time.time() - started, 1)
    result_file = RESULTS / f"{name}.json"
    fresh = result_file.is_file() and result_file.stat().st_mtime >= started
    if status == "ok" and proc.returncode == KEPT_STORED_EXIT:
        status = "kept"  # nothing to measure on this machine; its stored figures stay in the table
    elif status == "ok" and (proc.returncode != 0 or not fresh):
        status = "failed"
    if status not in SUCCEEDED:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        print(f"[bench] {name}: {status} after {seconds} s (exit {proc.returncode}); last lines of {log_path}:", flush=True)
        print("\n".join(f"    {line}" for line in tail), flush=True)
    return {"name": name, "status": status, "seconds": seconds, "exit": proc.returncode, "log": str(log_path)}


def load_results() -> list[dict[str, Any]]:
    out = []
    for name, _ in BENCHMARKS:
        path = RESULTS / f"{name}.json"
        if path.is_file():
            try:
                out.append(json.loads(path.read_text()))
            except ValueError:
                out.append({"name": name, "status": "failed", "reason": f"{path.name} is not valid JSON", "figures": []})
    return out


def table_rows(results: list[dict[str, Any]], runs: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for res in results:
        run = runs.get(res["name"])
        if run and run["status"] == "kept":
            reason = KEPT_REASONS.get(res["name"], "not measurable on this machine: stored figures below")
            rows.append([res["name"], reason, "", "", ""])
        elif run and run["status"] != "ok":
            rows.append([res["name"], f"{run['status']} in this run (older figures below)", "", "", ""])
        if res.get("status") != "ok" or not res.get("figures"):
            rows.append([res["name"], f"{res.get('status', '?')}: {res.get('reason', '')}".strip(), "", "", ""])
        for f in res.get("figures", []):
            met = {True: "yes", False: "**no**", None: ""}[f.get("met")]
            rows.append([f["stage"], f["figure"], f.get("display", ""), f.get("goal") or "", met])
    for name, run in runs.items():
        if run["status"] not in SUCCEEDED and not any(r["name"] == name for r in results):
            rows.append([name, f"{run['status']} (no result file)", "", "", ""])
    return rows


def render_console(rows: list[list[str]]) -> str:
    header = ["stage", "figure", "value", "goal", "met?"]
    widths = [max(len(str(r[i]).replace("**", "")) for r in [header, *rows]) for i in range(5)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    for r in rows:
        lines.append("  ".join(str(c).replace("**", "").ljust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(lines)


def render_markdown(rows: list[list[str]], results: list[dict[str, Any]]) -> str:
    lines = ["| stage | figure | value | goal | met? |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    lines.append("")
    for res in results:
        m = res.get("machine", {})
        load = m.get("load_average_1_5_15")
        lines.append(
            f"- `{res['name']}`: {m.get('date', '?')}, {_cpu(m)}, {m.get('cores', '?')} cores, "
            f"load average {load[0] if load else '?'} at start, {res.get('seconds', '?')} s; "
            f"params: {json.dumps(_short_params(res.get('params', {})))}"
        )
    return "\n".join(lines)


def _short_params(params: dict[str, Any]) -> dict[str, Any]:
    keep = ("images", "local1_images", "source", "median_width", "median_height", "workers", "rows", "epochs",
            "device", "batch", "engines", "ocr_engine", "size_images", "new_images", "catalog_rows",
            "big_catalog_rows", "master")
    return {k: params[k] for k in keep if k in params}


def _run_label(res: dict[str, Any]) -> str:
    """The run a figure came from: script, date, machine and load at start."""
    m = res.get("machine", {})
    load = m.get("load_average_1_5_15")
    return (f"`{res['name']}` {str(m.get('date', '?'))[:10]}, {m.get('cores', '?')}-core {_cpu(m)}, "
            f"load {load[0] if load else '?'}")


def _cpu(machine: dict[str, Any]) -> str:
    """The CPU's model name and, where the run recorded them, its model-relevant instruction sets."""
    features = machine.get("cpu_features")
    name = machine.get("cpu_model", "?")
    return name if features is None else f"{name} ({', '.join(features) or 'none of ' + ', '.join(MODEL_CPU_FLAGS)})"


def headline_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """The README's short table: each HEADLINE figure from its benchmark's stored JSON, with that run named."""
    by_name = {r["name"]: r for r in results}
    rows = []
    for name, prefix, label in HEADLINE:
        res = by_name.get(name)
        fig = next((f for f in (res or {}).get("figures", []) if f.get("figure", "").startswith(prefix)), None)
        if res is None or fig is None:
            rows.append([label, "not in the stored results", "", "", ""])
            continue
        met = {True: "yes", False: "**no**", None: ""}[fig.get("met")]
        rows.append([label, fig.get("display", ""), fig.get("goal") or "", met, _run_label(res)])
    return rows


def render_headline(rows: list[list[str]]) -> str:
    lines = ["| figure | value | goal | met? | run (date, machine, load average at start) |",
             "| --- | ---: | --- | --- | --- |"]
    for r in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    lines.append("")
    lines.append("Every figure with its parameters: [docs/benchmarks.md](docs/benchmarks.md).")
    return "\n".join(lines)


def refresh_region(path: Path, start_marker: str, end_marker: str, markdown: str, what: str) -> bool:
    """Writes markdown between the markers in path; False (and nothing written) when they are missing."""
    if not path.is_file():
        return False
    text = path.read_text()
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        return False
    body = (f"{start_marker}\n<!-- generated by bench/run_all.py (make bench); edit bench/, not this {what} -->\n\n"
            f"{markdown}\n{end_marker}")
    path.write_text(text[:start] + body + text[end + len(end_marker):])
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="benchmarks to run (default: all, in order)")
    ap.add_argument("--table-only", action="store_true", help="run nothing; rebuild the table from stored results")
    args = ap.parse_args()
    known = [n for n, _ in BENCHMARKS]
    unknown = [n for n in args.names if n not in known]
    if unknown:
        print(f"error: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    started = time.time()
    runs: dict[str, dict[str, Any]] = {}
    if not args.table_only:
        for name, timeout in BENCHMARKS:
            if args.names and name not in args.names:
                continue
            runs[name] = run_one(name, env_int(f"BENCH_TIMEOUT_{name.upper()}", timeout))
    results = load_results()
    rows = table_rows(results, runs)
    summary = {
        "machine": machine_facts(), "seconds": round(time.time() - started, 1), "runs": list(runs.values()),
        "results": [{"name": r["name"], "status": r.get("status"), "reason": r.get("reason", ""),
                     "date": r.get("machine", {}).get("date"), "seconds": r.get("seconds")} for r in results],
        "figures": [{"benchmark": r["name"], **f} for r in results for f in r.get("figures", [])],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n" + render_console(rows))
    print(f"\n[bench] total {summary['seconds']:.0f} s; wrote {(RESULTS / 'summary.json').relative_to(REPO)}")
    for path, start, end, markdown, what in (
            (FULL_TABLE, START, END, render_markdown(rows, results), "table"),
            (README, HEADLINE_START, HEADLINE_END, render_headline(headline_rows(results)), "headline table")):
        name = path.relative_to(REPO)
        if refresh_region(path, start, end, markdown, what):
            print(f"[bench] refreshed the {what} in {name}")
        else:
            print(f"[bench] {name} has no {start} ... {end} markers: {name} not changed")
    return 0 if all(r["status"] in SUCCEEDED for r in runs.values()) else 1


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
