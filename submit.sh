#!/usr/bin/env bash
# submit.sh JOB [job args] [--master URL] [--conf FILE] [--executor-python PATH] [--archive ENV.tar.gz]
# Wraps spark-submit for every job in jobs/. See ./submit.sh --help.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV_PY="$HERE/.venv/bin/python"

usage() {
  cat <<'TXT'
Usage: ./submit.sh JOB [job arguments] [--master URL] [--conf FILE]... [--executor-python PATH]
                   [--archive ENV.tar.gz] [--spark-arg ARG]...

Runs jobs/JOB.py under spark-submit. JOB is one of: extract_features, train, predict, evaluate,
profile_catalog, make_sample.

  --master URL           Spark master: local[N] (default local[*]), spark://HOST:PORT, yarn, k8s://...
  --conf FILE            YAML configuration (repeatable). Passed to the job, shipped to executors with
                         --files, and its spark.conf settings become spark-submit --conf options (so
                         settings such as spark.driver.memory apply before the JVM starts).
  --executor-python PATH Python the executors run (spark.pyspark.python). Default: this checkout's
                         .venv/bin/python, right for local mode and for workers on this machine or on
                         machines with the same path (the Docker image puts it at /opt/imagequant/.venv).
  --archive ENV.tar.gz   A packed virtualenv (e.g. made by venv-pack) shipped with --archives
                         ENV.tar.gz#environment; executors then run ./environment/bin/python.
  --spark-arg ARG        Any other spark-submit argument, passed verbatim (repeatable).
  --set KEY=VALUE        (job option) override one setting, e.g. --set ocr.engine=rapidocr.

The imagequant package is always shipped as a zip with --py-files, so executors that already have the
dependencies (the Docker image) need nothing else.

Examples:
  ./submit.sh extract_features --catalog cat.csv --store /data/store --images-dir /data/images
  ./submit.sh extract_features --master spark://10.0.0.5:7077 --conf conf/cluster.yaml --catalog ...
  ./submit.sh train --catalog labels.csv --store S --model M
TXT
}

[[ $# -eq 0 || $1 == -h || $1 == --help ]] && { usage; exit 0; }
JOB="$1"; shift
JOB_FILE="$HERE/jobs/$JOB.py"
if [[ ! -f $JOB_FILE ]]; then
  echo "error: unknown job '$JOB' (jobs: $(cd "$HERE/jobs" && ls *.py | sed 's/\.py$//' | tr '\n' ' '))" >&2
  exit 2
fi

MASTER="local[*]"
EXEC_PY=""
ARCHIVE=""
CONFS=()
SPARK_ARGS=()
JOB_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --master) [[ $# -ge 2 ]] || { echo "error: --master needs a URL" >&2; exit 2; }; MASTER="$2"; shift 2 ;;
    --master=*) MASTER="${1#*=}"; shift ;;
    --conf) [[ $# -ge 2 ]] || { echo "error: --conf needs a file" >&2; exit 2; }; CONFS+=("$2"); shift 2 ;;
    --conf=*) CONFS+=("${1#*=}"); shift ;;
    --executor-python) EXEC_PY="$2"; shift 2 ;;
    --archive) ARCHIVE="$2"; shift 2 ;;
    --spark-arg) SPARK_ARGS+=("$2"); shift 2 ;;
    *) JOB_ARGS+=("$1"); shift ;;
  esac
done

DRIVER_PY="${IMAGEQUANT_PYTHON:-$VENV_PY}"
if [[ ! -x $DRIVER_PY ]]; then
  echo "error: $DRIVER_PY not found; run 'make setup' first (or set IMAGEQUANT_PYTHON)" >&2
  exit 2
fi
SPARK_SUBMIT="$(dirname "$DRIVER_PY")/spark-submit"
[[ -x $SPARK_SUBMIT ]] || SPARK_SUBMIT="$(command -v spark-submit || true)"
[[ -n $SPARK_SUBMIT ]] || { echo "error: spark-submit not found (pip install pyspark into the venv)" >&2; exit 2; }

for conf in "${CONFS[@]+"${CONFS[@]}"}"; do
  [[ -f $conf ]] || { echo "error: configuration file $conf does not exist" >&2; exit 2; }
done

# The package as a zip for --py-files, rebuilt when the sources change.
ZIP="$HERE/build/imagequant.zip"
mkdir -p "$HERE/build"
if [[ ! -f $ZIP ]] || [[ -n $(find "$HERE/imagequant" -name '*.py' -newer "$ZIP" -print -quit) ]]; then
  (cd "$HERE" && rm -f "$ZIP" && find imagequant -name '*.py' | sort | zip -q -X "$ZIP" -@ 2>/dev/null) \
    || "$DRIVER_PY" - "$HERE" "$ZIP" <<'PY'
import sys, zipfile, pathlib
root, out = pathlib.Path(sys.argv[1]), sys.argv[2]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
    for path in sorted((root / "imagequant").rglob("*.py")):
        zf.write(path, path.relative_to(root).as_posix())
PY
fi

SUBMIT=("$SPARK_SUBMIT" --master "$MASTER" --py-files "$ZIP")
if [[ -n $ARCHIVE ]]; then
  SUBMIT+=(--archives "$ARCHIVE#environment" --conf spark.pyspark.python=./environment/bin/python)
else
  SUBMIT+=(--conf "spark.pyspark.python=${EXEC_PY:-$DRIVER_PY}")
fi
SUBMIT+=(--conf "spark.pyspark.driver.python=$DRIVER_PY")

# YAML spark.conf -> --conf (later files win, as in the job's own merge), and the files themselves shipped.
FILES=""
# conf/default.yaml's Spark settings first (the job merges it first too), then the given files.
while IFS= read -r kv; do [[ -n $kv ]] && SUBMIT+=(--conf "$kv"); done < <("$DRIVER_PY" "$HERE/imagequant/spark/submit_conf.py" "$HERE/conf/default.yaml")
for conf in "${CONFS[@]+"${CONFS[@]}"}"; do
  FILES="${FILES:+$FILES,}$(cd "$(dirname "$conf")" && pwd)/$(basename "$conf")"
  while IFS= read -r kv; do [[ -n $kv ]] && SUBMIT+=(--conf "$kv"); done < <("$DRIVER_PY" "$HERE/imagequant/spark/submit_conf.py" "$conf")
  JOB_ARGS+=(--conf "$conf")
done
[[ -n $FILES ]] && SUBMIT+=(--files "$FILES")

export PYSPARK_PYTHON="${EXEC_PY:-$DRIVER_PY}"
export OMP_THREAD_LIMIT="${OMP_THREAD_LIMIT:-1}"
exec "${SUBMIT[@]}" "${SPARK_ARGS[@]+"${SPARK_ARGS[@]}"}" "$JOB_FILE" "${JOB_ARGS[@]+"${JOB_ARGS[@]}"}"
