#!/usr/bin/env bash
# Entry point of the ImageQuant image (run under tini). Commands:
#   master                 Spark standalone master (SPARK_MASTER_HOST/PORT/WEBUI_PORT, SPARK_MASTER_OPTS)
#   worker spark://H:P     Spark standalone worker (SPARK_WORKER_CORES/MEMORY, SPARK_WORKER_OPTS for GPUs)
#   driver ARGS...         Kubernetes driver pod (spark-submit --deploy-mode cluster starts it this way)
#   executor               Kubernetes executor pod (Spark passes everything in SPARK_* variables)
#   --help                 this text
#   anything else          run as given, e.g. ./submit.sh extract_features ... or bash
set -euo pipefail

: "${SPARK_HOME:?SPARK_HOME must be set (the image sets it)}"

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; }

# Kubernetes passes executor JVM options as SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ... in order.
java_opts() {
  local i=0 name
  JAVA_OPTS=()
  while name="SPARK_JAVA_OPT_$i"; [[ -n ${!name+set} ]]; do
    JAVA_OPTS+=("${!name}")
    i=$((i + 1))
  done
}

classpath() {
  local cp="${SPARK_CONF_DIR:-$SPARK_HOME/conf}:$SPARK_HOME/jars/*"
  [[ -n ${HADOOP_CONF_DIR:-} ]] && cp="$HADOOP_CONF_DIR:$cp"
  [[ -n ${SPARK_EXTRA_CLASSPATH:-} ]] && cp="$cp:$SPARK_EXTRA_CLASSPATH"
  echo "$cp"
}

command="${1:---help}"
case "$command" in
  master)
    shift
    exec spark-class org.apache.spark.deploy.master.Master "$@"
    ;;
  worker)
    shift
    [[ $# -ge 1 ]] || { echo "error: worker needs the master URL, e.g. worker spark://spark-master:7077" >&2; exit 2; }
    exec spark-class org.apache.spark.deploy.worker.Worker "$@"
    ;;
  driver)
    shift
    exec spark-submit --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS:?}" --deploy-mode client "$@"
    ;;
  executor)
    java_opts
    exec java "${JAVA_OPTS[@]+"${JAVA_OPTS[@]}"}" \
      -Xms"${SPARK_EXECUTOR_MEMORY:?}" -Xmx"${SPARK_EXECUTOR_MEMORY}" \
      -cp "$(classpath)" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "${SPARK_DRIVER_URL:?}" \
      --executor-id "${SPARK_EXECUTOR_ID:?}" \
      --cores "${SPARK_EXECUTOR_CORES:?}" \
      --app-id "${SPARK_APPLICATION_ID:?}" \
      --hostname "${SPARK_EXECUTOR_POD_IP:?}" \
      --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}" \
      --podName "${SPARK_EXECUTOR_POD_NAME:?}"
    ;;
  -h|--help)
    usage
    ;;
  *)
    exec "$@"
    ;;
esac
