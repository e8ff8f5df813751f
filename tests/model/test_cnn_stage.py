"""The extract job's CNN stage without Spark: crops read from Arrow buffers, batches gathered for the network,
features in the rows' order, zeros where an image had no crop; a worker that cannot import torch under a memory
cap gives its images a status. The real network runs (CPU, random weights)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from imagequant.cnn_runtime import FEATURE_DIM, get_extractor
from imagequant.config import load_config
from imagequant.imaging import prepare_for_cnn
from imagequant.pipeline.images import _chunks, embed_crops
from imagequant.spark.udfs import cnn_features_function, crops_from_arrow

REPO = Path(__file__).resolve().parents[2]
SIZE = 8  # crops_from_arrow does not care about the network's input size


def _crops(count: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def test_crops_from_arrow_reads_the_buffer_and_skips_rows_without_a_crop() -> None:
    crops = _crops(4)
    column = pa.array([crops[0].tobytes(), crops[1].tobytes(), b"", None, crops[2].tobytes(), b"short",
                       crops[3].tobytes()], type=pa.binary())
    got, present = crops_from_arrow(column, SIZE)
    assert present.tolist() == [0, 1, 4, 6]
    np.testing.assert_array_equal(got, crops)  # not back to back: one gathered copy
    # A slice of an array (non-zero offset), the usual back-to-back case: a view of the data buffer, no copy.
    clean = pa.array([c.tobytes() for c in crops], type=pa.binary()).slice(1, 3)
    view, present = crops_from_arrow(clean, SIZE)
    assert present.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(view, crops[1:])
    assert np.shares_memory(view, np.frombuffer(clean.buffers()[2], dtype=np.uint8))
    large = pa.array([c.tobytes() for c in crops], type=pa.large_binary())
    np.testing.assert_array_equal(crops_from_arrow(large, SIZE)[0], crops)
    empty, none = crops_from_arrow(pa.array([b"", None], type=pa.binary()), SIZE)
    assert empty.shape == (0, SIZE, SIZE, 3) and none.size == 0


def test_chunks_split_pieces_into_batches_without_copying() -> None:
    pieces = [np.arange(5), np.arange(5, 8), np.arange(8, 15)]
    chunks = list(_chunks(pieces, 4))
    assert [np.concatenate(c).tolist() for c in chunks] == [list(range(i, min(i + 4, 15))) for i in range(0, 15, 4)]
    assert all(np.shares_memory(part, whole) for c in chunks for part in c for whole in pieces
               if np.shares_memory(part, whole))


@pytest.fixture(scope="module")
def cnn_config():  # noqa: ANN201
    return load_config(overrides=["cnn.device=cpu", "cnn.batch_size=3", "imaging.cnn_size=64"])


def test_embedding_pieces_equals_embedding_one_array(cnn_config) -> None:  # noqa: ANN001
    crops = _crops(5, 64, seed=1)
    whole, _ = embed_crops(crops, cnn_config)
    pieces, _ = embed_crops([crops[:2], crops[2:2], crops[2:]], cnn_config)
    assert whole.shape == (5, FEATURE_DIM)
    np.testing.assert_allclose(pieces, whole, rtol=1e-4, atol=1e-5)
    read_only = crops.copy()
    read_only.flags.writeable = False  # as a view of an Arrow buffer is
    np.testing.assert_allclose(get_extractor(cnn_config.cnn, 64).embed(read_only), whole, rtol=1e-4, atol=1e-5)


def test_cnn_function_gathers_batches_and_keeps_every_row(cnn_config) -> None:  # noqa: ANN001
    crops = _crops(5, 64, seed=2)
    inputs = [crops[0].tobytes(), b"", crops[1].tobytes(), crops[2].tobytes(), None, crops[3].tobytes(),
              crops[4].tobytes()]
    table = pa.table({"image_id": [f"img{i}" for i in range(7)], "cnn_input": pa.array(inputs, type=pa.binary()),
                      "status": ["ok", "fetch_error", "ok", "ok", "decode_error", "ok", "ok"]})
    batches = table.to_batches(max_chunksize=2)  # smaller than cnn.batch_size: gathered before the network
    out = list(cnn_features_function(cnn_config)(iter(batches)))
    assert [b.num_rows for b in out] == [b.num_rows for b in batches]  # one output batch per input batch
    result = pa.Table.from_batches(out)
    assert result.schema.names == ["image_id", "status", "cnn_features", "seconds_cnn"]
    assert result.column("image_id").to_pylist() == [f"img{i}" for i in range(7)]
    features = np.asarray(result.column("cnn_features").combine_chunks().flatten()).reshape(7, FEATURE_DIM)
    expected, _ = embed_crops(crops, cnn_config)
    np.testing.assert_allclose(features[[0, 2, 3, 5, 6]], expected, rtol=1e-4, atol=1e-5)
    assert not features[1].any() and not features[4].any()
    seconds = result.column("seconds_cnn").to_numpy()
    assert (seconds[[0, 2, 3, 5, 6]] > 0).all() and seconds[1] == 0 and seconds[4] == 0


def test_prepare_for_cnn_matches_torchvision_eval_transform() -> None:
    transforms = pytest.importorskip("torchvision.transforms")
    rng = np.random.default_rng(3)
    src = Image.fromarray(rng.integers(0, 255, (300, 410, 3), dtype=np.uint8))
    expected = np.asarray(transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])(src))
    got = prepare_for_cnn(src, 224)
    assert got.shape == expected.shape
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_imagenet_weights_name_is_torchvisions_file() -> None:
    from torchvision.models import ResNet50_Weights

    from imagequant.cnn_weights import IMAGENET_WEIGHTS_NAME, imagenet_weights_file

    assert ResNet50_Weights.IMAGENET1K_V2.url.rsplit("/", 1)[1] == IMAGENET_WEIGHTS_NAME
    assert imagenet_weights_file() == Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_WEIGHTS_NAME


def test_the_extract_driver_does_not_import_torch() -> None:
    """The driver checks and describes the weights; only executors load the network."""
    code = "import sys, imagequant.spark.extract, jobs.extract_features; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"


# In a fresh process under a real RLIMIT_AS of 2 GiB (the measured import needs about 3.1 GB more than the
# process holds): the CNN stage's Arrow function over one batch, its images' statuses out.
_CAPPED = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
import numpy as np, pyarrow as pa
from imagequant.config import load_config
from imagequant.spark.udfs import cnn_features_function

config = load_config(overrides=["cnn.enabled=true", "cnn.cpu_runtime=torch"])
size = config.imaging.cnn_size
crop = np.full((size, size, 3), 200, dtype=np.uint8).tobytes()
batch = pa.RecordBatch.from_pydict({
    "image_id": ["a", "b", "c"], "status": ["ok", "decode_error", "ok"], "error": ["", "bad bytes", ""],
    "cnn_input": pa.array([crop, b"", crop], type=pa.binary()),
})
out = pa.Table.from_batches(list(cnn_features_function(config)(iter([batch]))))
print(json.dumps({"status": out.column("status").to_pylist(), "error": out.column("error").to_pylist(),
                  "features": [float(np.abs(np.asarray(f)).sum()) for f in out.column("cnn_features").to_pylist()],
                  "torch": "torch" in sys.modules}))
"""


def test_a_cnn_stage_that_cannot_import_torch_gives_its_images_a_status() -> None:
    done = subprocess.run([sys.executable, "-c", _CAPPED], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == ["cnn_error", "decode_error", "cnn_error"]
    assert result["error"][1] == "bad bytes"  # an image without a crop keeps its own failure
    assert "the CNN stage failed in this worker (ImportError" in result["error"][0], result["error"][0]
    assert "at least 5g" in result["error"][0]
    assert result["features"] == [0.0, 0.0, 0.0] and not result["torch"]
