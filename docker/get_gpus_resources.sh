#!/usr/bin/env bash
# Spark GPU discovery script (spark.executor.resource.gpu.discoveryScript, and for standalone workers
# spark.worker.resource.gpu.discoveryScript). Prints the GPUs this process may use, in Spark's
# ResourceInformation JSON:
#
#   {"name":"gpu","addresses":["0","1"]}
#
# Addresses are CUDA device ordinals as this process sees them, which is what Spark hands to tasks
# (TaskContext.resources()["gpu"].addresses) and what torch's "cuda:N" means:
#   * CUDA_VISIBLE_DEVICES set: CUDA renumbers the listed devices 0..n-1, so print those ordinals
#     (empty, "-1" or "none" hide every GPU);
#   * otherwise: the indexes nvidia-smi lists (inside a container, only the GPUs given to it).
# No nvidia-smi, or nvidia-smi failing (no driver): empty addresses and exit 0. Spark then refuses to
# start an executor that requires a GPU, with a message naming the resource, instead of running the CNN
# on a GPU that is not there.
#
# Only bash builtins besides nvidia-smi, so it works in minimal images.
set -uo pipefail

addresses=()
if smi_out="$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null)"; then
  smi_count=0
  while IFS= read -r line; do
    line="${line//[[:space:]]/}"
    [[ $line =~ ^[0-9]+$ ]] && smi_count=$((smi_count + 1))
  done <<<"$smi_out"

  if [[ -n ${CUDA_VISIBLE_DEVICES+set} ]]; then
    visible="${CUDA_VISIBLE_DEVICES//[[:space:]]/}"
    count=0
    if [[ -n $visible && $visible != "-1" && ${visible,,} != "none" && ${visible,,} != "nodevfiles" ]]; then
      IFS=',' read -r -a entries <<<"$visible"
      for entry in "${entries[@]}"; do
        [[ -n $entry ]] && count=$((count + 1))
      done
    fi
    # Devices listed but not present are not usable either.
    ((count > smi_count)) && count=$smi_count
    for ((i = 0; i < count; i++)); do addresses+=("$i"); done
  else
    while IFS= read -r line; do
      line="${line//[[:space:]]/}"
      [[ $line =~ ^[0-9]+$ ]] && addresses+=("$line")
    done <<<"$smi_out"
  fi
fi

json=""
for address in "${addresses[@]+"${addresses[@]}"}"; do
  json+="${json:+,}\"$address\""
done
printf '{"name":"gpu","addresses":[%s]}\n' "$json"
