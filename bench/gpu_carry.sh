#!/usr/bin/env bash
# Builds .gpu-carry/: pyspark's Python package (without its 440 MB of jars) and py4j, for the lent GPU
# machines, which have torch but neither Spark nor Java. With it, bench/gpu_cnn.py imports the project's
# UDF and feeds it Arrow batches as Spark's Python worker would ("worker" mode). About 14 MB.
#   echo /.gpu-carry/ >> .git/info/exclude    # once: git ignores it, the device call carries it
#   bench/gpu_carry.sh
# then run on the device (carry [".gpu-carry"]):
#   PYTHONPATH=.gpu-carry PYTHONUNBUFFERED=1 python3 bench/gpu_cnn.py; cp bench/results/gpu_cnn.json "$OUT"/
set -euo pipefail
cd "$(dirname "$0")/.."
site=$(.venv/bin/python -c 'import pyspark, os; print(os.path.dirname(os.path.dirname(pyspark.__file__)))')
rm -rf .gpu-carry
mkdir -p .gpu-carry
cp -r "$site/pyspark" "$site/py4j" .gpu-carry/
rm -rf .gpu-carry/pyspark/{jars,examples,data,licenses,bin,sbin}
find .gpu-carry -type d \( -name __pycache__ -o -name tests \) -prune -exec rm -rf {} +
du -sh .gpu-carry
