#!/usr/bin/env bash
# Run by docker/check.sh inside the built image, as the image's user, from /opt/imagequant: the fast unit
# tests (tests/ and pyproject.toml are mounted for this; the image does not hold them), then one
# extract_features + predict (rule scorer) over a few generated images, checked row by row.
#   docker/check-in-image.sh [N_IMAGES]
set -euo pipefail

images="${1:-6}"
log() { echo "[docker-check] (in image) $*"; }

log "$(id -un 2>/dev/null || id -u) in $(pwd); $(python --version); $(java -version 2>&1 | head -n 1); $(tesseract --version 2>&1 | head -n 1)"
[[ -d tests/unit ]] || { echo "error: tests/unit is not mounted at $(pwd)/tests" >&2; exit 2; }

log "unit tests (tests/unit)"
# The checkout is mounted read-only: no .pytest_cache.
python -m pytest -q -p no:cacheprovider tests/unit

work="$(mktemp -d /tmp/docker-check.XXXXXX)"
quiet=(--set spark.conf.spark.ui.showConsoleProgress=false)  # no progress bars in a log
log "generating $images sample images in $work"
python jobs/make_sample.py --out "$work/sample" --images "$images" --seed 5 > /dev/null

log "extract_features"
./submit.sh extract_features --catalog "$work/sample/catalog.csv" --images-dir "$work/sample/images" \
  --store "$work/store" "${quiet[@]}"

log "predict --model rules"
./submit.sh predict --catalog "$work/sample/catalog.csv" --store "$work/store" --model rules --out "$work/predictions" \
  "${quiet[@]}"

# Every catalog row comes out once, with status ok: the images were all there to extract.
python - "$work" <<'EOF'
import sys
from pathlib import Path

import pandas as pd

work = Path(sys.argv[1])
catalog = pd.read_csv(work / "sample" / "catalog.csv")
predictions = pd.read_parquet(work / "predictions" / "predictions.parquet")
statuses = predictions["status"].value_counts().to_dict()
filled = int((predictions["prediction"].fillna("") != "").sum())
print(f"[docker-check] (in image) {len(predictions)} predictions for {len(catalog)} catalog rows; "
      f"statuses {statuses}; {filled} with a value")
problems = []
if sorted(predictions["index"]) != sorted(catalog["index"]):
    problems.append("the predictions' indexes are not the catalog's")
if statuses != {"ok": len(catalog)}:
    problems.append(f"expected every row with status ok, got {statuses}")
if problems:
    sys.exit("error: " + "; ".join(problems))
EOF
rm -rf "$work"
log "passed"
