#!/usr/bin/env bash
# submit.sh JOB [job arguments] [--master URL] [--conf FILE]... [--executor-python PATH | --archive ENV.tar.gz]
#           [--spark-arg ARG]... [--dry-run]
# Wraps spark-submit for every job in jobs/. See ./submit.sh --help.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV_PY="$HERE/.venv/bin/python"

usage() {
  cat <<'TXT'
Usage: ./submit.sh JOB [job arguments] [--master URL] [--conf FILE]...
                   [--executor-python PATH | --archive ENV.tar.gz] [--spark-arg ARG]... [--dry-run]
       ./submit.sh JOB --help        the job's own options (no Spark started)

Runs jobs/JOB.py under spark-submit in client mode (the driver runs here). JOB is one of the files in
jobs/: extract_features, train, predict, evaluate, profile_catalog, make_sample, measure_ocr, compact_store,
explain. explain needs no Spark: it runs directly with the driver's Python (seconds), and the Spark options
below do not apply to it.

Options read by submit.sh (any order, mixed with the job's arguments):
  --master URL           Spark master: local[N], spark://HOST:PORT (standalone), yarn, k8s://https://HOST:PORT.
                         Default: the configuration's spark.master (conf/local.yaml: local[2]), else local[*].
  --conf FILE            YAML configuration (repeatable; later files win). Passed on to the job, shipped to
                         the executors with --files, and its spark.conf settings become spark-submit --conf
                         options, so settings read before the JVM starts (spark.driver.memory) apply too.
  --executor-python PATH Python interpreter of the executors (spark.pyspark.python). Default: the
                         configuration's spark.conf.spark.pyspark.python, else this checkout's .venv/bin/python
                         (right for local mode and workers on this machine). The Docker image's is
                         /opt/imagequant/.venv/bin/python.
  --archive ENV.tar.gz   A packed virtual environment (venv-pack or conda-pack) shipped with
                         --archives ENV.tar.gz#environment; executors run ./environment/bin/python.
                         Use it when the executors lack the dependencies; not with --executor-python.
  --spark-arg ARG        Any other spark-submit argument, verbatim (repeatable), e.g.
                         --spark-arg --conf=spark.eventLog.enabled=true --spark-arg --num-executors=8
  --dry-run              Print the spark-submit command instead of running it.
  -h, --help             This text.

Job options that submit.sh also reads (and passes on unchanged):
  --set KEY=VALUE        Override one setting. --set spark.master=URL acts like --master, and
                         --set spark.conf.<spark key>=VALUE becomes a spark-submit --conf option.

What is shipped:
  * the imagequant package as build/imagequant-<hash>.zip with --py-files (rebuilt when the sources
    change), so executors always run the code of this checkout;
  * the Python environment: executors run spark.pyspark.python (see --executor-python), or the packed
    environment of --archive; the driver runs .venv/bin/python (or $IMAGEQUANT_PYTHON);
  * every --conf FILE with --files;
  * OMP_THREAD_LIMIT (default 1) to the executors as spark.executorEnv.OMP_THREAD_LIMIT: Tesseract's
    OpenMP threads would oversubscribe cores that already run one task each.

The configuration is checked before spark-submit starts: a bad file or --set ends with "error: ..." and
exit status 2, as the job itself would. Exit status: the job's (0 done, 1 job failure such as
--max-failure-ratio exceeded, 2 usage or configuration error).

Examples:
  ./submit.sh extract_features --catalog cat.csv --store /data/store --images-dir /data/images
  ./submit.sh extract_features --conf conf/local.yaml --catalog cat.csv --store S --set ocr.engine=both
  ./submit.sh extract_features --master spark://10.0.0.5:7077 --conf conf/cluster.yaml \
      --executor-python /opt/imagequant/.venv/bin/python --catalog hdfs:///cat.csv --store hdfs:///store \
      --run-date 2024-05-01 --max-failure-ratio 0.05
  ./submit.sh train --catalog labels.csv --store S --model M
  ./submit.sh explain --image photo.jpg --entity item_weight --out /tmp/explain
TXT
}

die() { echo "error: $*" >&2; exit 2; }
job_names() { (cd "$HERE/jobs" && ls -- *.py | sed 's/\.py$//' | paste -sd ' '); }

[[ $# -gt 0 && ( $1 == -h || $1 == --help ) ]] && { usage; exit 0; }
[[ $# -eq 0 ]] && die "give a job: ./submit.sh JOB [options] (jobs: $(job_names)); ./submit.sh --help says more"
JOB="$1"; shift
JOB_FILE="$HERE/jobs/$JOB.py"
if [[ $JOB == -* || ! -f $JOB_FILE ]]; then
  die "unknown job '$JOB' (jobs: $(job_names))"
fi

MASTER=""
EXEC_PY=""
ARCHIVE=""
DRY_RUN=0
WANT_HELP=0
CONFS=()
SETS=()
SPARK_ARGS=()
JOB_ARGS=()
need() { [[ $2 -ge 2 ]] || die "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --master) need "$1" $#; MASTER="$2"; shift 2 ;;
    --master=*) MASTER="${1#*=}"; shift ;;
    --conf) need "$1" $#; CONFS+=("$2"); shift 2 ;;
    --conf=*) CONFS+=("${1#*=}"); shift ;;
    --executor-python) need "$1" $#; EXEC_PY="$2"; shift 2 ;;
    --executor-python=*) EXEC_PY="${1#*=}"; shift ;;
    --archive) need "$1" $#; ARCHIVE="$2"; shift 2 ;;
    --archive=*) ARCHIVE="${1#*=}"; shift ;;
    --spark-arg) need "$1" $#; SPARK_ARGS+=("$2"); shift 2 ;;
    --spark-arg=*) SPARK_ARGS+=("${1#*=}"); shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --set) need "$1" $#; SETS+=("$2"); JOB_ARGS+=("$1" "$2"); shift 2 ;;
    --set=*) SETS+=("${1#*=}"); JOB_ARGS+=("$1"); shift ;;
    -h|--help) WANT_HELP=1; shift ;;
    *) JOB_ARGS+=("$1"); shift ;;
  esac
done
[[ -n $EXEC_PY && -n $ARCHIVE ]] && die "--executor-python and --archive exclude each other"

DRIVER_PY="${IMAGEQUANT_PYTHON:-$VENV_PY}"
[[ -x $DRIVER_PY ]] || die "$DRIVER_PY not found; run 'make setup' first (or set IMAGEQUANT_PYTHON)"

# The job's own help needs no Spark.
[[ $WANT_HELP -eq 1 ]] && exec "$DRIVER_PY" "$JOB_FILE" --help

# Jobs that never start Spark run directly: spark-submit would only add a JVM's start-up to them.
if [[ $JOB == explain ]]; then
  [[ -z $MASTER && -z $EXEC_PY && -z $ARCHIVE && ${#SPARK_ARGS[@]} -eq 0 ]] \
    || die "$JOB runs without Spark: --master, --executor-python, --archive and --spark-arg do not apply"
  DIRECT=("$DRIVER_PY" "$JOB_FILE" "${JOB_ARGS[@]+"${JOB_ARGS[@]}"}")
  for conf in "${CONFS[@]+"${CONFS[@]}"}"; do DIRECT+=(--conf "$conf"); done
  if [[ $DRY_RUN -eq 1 ]]; then
    printf '%q ' "${DIRECT[@]}"; echo
    exit 0
  fi
  export OMP_THREAD_LIMIT="${OMP_THREAD_LIMIT:-1}"
  exec "${DIRECT[@]}"
fi

SPARK_SUBMIT="$(dirname "$DRIVER_PY")/spark-submit"
[[ -x $SPARK_SUBMIT ]] || SPARK_SUBMIT="$(command -v spark-submit || true)"
[[ -n $SPARK_SUBMIT ]] || die "spark-submit not found (pip install pyspark into the venv)"

CONF_PATHS=()
for conf in "${CONFS[@]+"${CONFS[@]}"}"; do
  [[ -f $conf ]] || die "configuration file $conf does not exist"
  CONF_PATHS+=("$(cd "$(dirname "$conf")" && pwd)/$(basename "$conf")")
done

# Master, spark.conf and the package zip, from the configuration merged as the job merges it.
HELPER_ARGS=(--zip-dir "$HERE/build")
for conf in "${CONF_PATHS[@]+"${CONF_PATHS[@]}"}"; do HELPER_ARGS+=(--conf "$conf"); done
for item in "${SETS[@]+"${SETS[@]}"}"; do HELPER_ARGS+=(--set "$item"); done
RESOLVED="$("$DRIVER_PY" "$HERE/imagequant/spark/submit_conf.py" "${HELPER_ARGS[@]}")" || exit $?
CONF_MASTER=""
ZIP=""
YAML_CONF=()
while IFS= read -r line; do
  case "$line" in
    "master "*) CONF_MASTER="${line#master }" ;;
    "conf "*) YAML_CONF+=("${line#conf }") ;;
    "zip "*) ZIP="${line#zip }" ;;
  esac
done <<<"$RESOLVED"
[[ -n $ZIP ]] || die "could not build the imagequant package zip"
MASTER="${MASTER:-${CONF_MASTER:-local[*]}}"

SUBMIT=("$SPARK_SUBMIT" --master "$MASTER" --py-files "$ZIP")
# Defaults first; the YAML's settings after them win, and explicit options after those win again
# (spark-submit keeps the last --conf of a key).
SUBMIT+=(--conf "spark.pyspark.python=$DRIVER_PY")
SUBMIT+=(--conf "spark.executorEnv.OMP_THREAD_LIMIT=${OMP_THREAD_LIMIT:-1}")
for kv in "${YAML_CONF[@]+"${YAML_CONF[@]}"}"; do SUBMIT+=(--conf "$kv"); done
if [[ -n $ARCHIVE ]]; then
  [[ -f $ARCHIVE || $ARCHIVE == *://* ]] || die "archive $ARCHIVE does not exist"
  SUBMIT+=(--archives "$ARCHIVE#environment" --conf spark.pyspark.python=./environment/bin/python)
elif [[ -n $EXEC_PY ]]; then
  SUBMIT+=(--conf "spark.pyspark.python=$EXEC_PY")
fi
# The driver always runs this machine's interpreter (client mode).
SUBMIT+=(--conf "spark.pyspark.driver.python=$DRIVER_PY")
# Quiet JVM logging (warnings and the stage progress bar) unless the caller brings its own log4j2 file.
LOG4J="${IMAGEQUANT_LOG4J:-$HERE/conf/log4j2.properties}"
DRIVER_JAVA_OPTS="-Dlog4j2.configurationFile=file:$LOG4J"
# --driver-java-options replaces spark.driver.extraJavaOptions: keep the configuration's options too.
for kv in "${YAML_CONF[@]+"${YAML_CONF[@]}"}"; do
  [[ $kv == spark.driver.extraJavaOptions=* ]] && DRIVER_JAVA_OPTS="${kv#*=} $DRIVER_JAVA_OPTS"
done
SUBMIT+=(--driver-java-options "$DRIVER_JAVA_OPTS")
# Jobs that start a Spark session also get the master as a setting: the session builder applies the
# configuration's spark.master in code, which would otherwise override spark-submit's --master.
if grep -q "build_session" "$JOB_FILE"; then
  JOB_ARGS+=(--set "spark.master=$MASTER")
fi
if [[ ${#CONF_PATHS[@]} -gt 0 ]]; then
  FILES="$(IFS=,; echo "${CONF_PATHS[*]}")"
  SUBMIT+=(--files "$FILES")
  for conf in "${CONF_PATHS[@]}"; do JOB_ARGS+=(--conf "$conf"); done
fi
SUBMIT+=("${SPARK_ARGS[@]+"${SPARK_ARGS[@]}"}" "$JOB_FILE" "${JOB_ARGS[@]+"${JOB_ARGS[@]}"}")

if [[ $DRY_RUN -eq 1 ]]; then
  printf '%q ' "${SUBMIT[@]}"; echo
  exit 0
fi
export PYSPARK_DRIVER_PYTHON="$DRIVER_PY"
export OMP_THREAD_LIMIT="${OMP_THREAD_LIMIT:-1}"
exec "${SUBMIT[@]}"
