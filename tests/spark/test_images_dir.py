"""A file named by a link's plain file name in ``--images-dir`` (the challenge downloader's layout) serves
only the catalog's one link of that name: links that share the name are fetched, never given that file."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from PIL import Image, ImageDraw

from imagequant.config import load_config
from imagequant.spark.extract import run_extract

pytestmark = pytest.mark.slow

SETTINGS = ["fetch.allow_loopback=true", "fetch.max_retries=0", "ocr.engine=tesseract", "ocr.rotated_pass=false",
            "ocr.second_pass=false", "cnn.enabled=false", "spark.image_partitions_per_core=1"]


def marked_jpeg(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    """A small JPEG of one colour with a dark bar across it: not uniform, so it is read, not a blank_image."""
    image = Image.new("RGB", size, color)
    ImageDraw.Draw(image).rectangle((size[0] // 4, size[1] // 3, 3 * size[0] // 4, size[1] // 2), fill=(0, 0, 0))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_a_plain_named_file_serves_only_the_one_link_of_its_name(spark: Any, image_server: Any,
                                                                 tmp_path: Path) -> None:
    served = marked_jpeg((64, 48), (200, 30, 30))
    placed, solo = marked_jpeg((40, 30), (0, 0, 250)), marked_jpeg((50, 50), (0, 250, 0))
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    for name, data in (("q.jpg", placed), ("x.jpg", placed), ("solo.jpg", solo)):
        (images_dir / name).write_bytes(data)  # what the challenge's downloader leaves
    image_server.add("/plain/q.jpg", served)  # the server ignores the query: both ids get this image
    image_server.add("/plain/x.jpg", served)
    hits = dict(image_server.hits)
    shared = [image_server.url("/plain/q.jpg?id=1"), image_server.url("/plain/q.jpg?id=2"),
              image_server.url("/plain/x.jpg"), image_server.url("/plain/x.jpg", host="localhost")]
    only = image_server.url("/plain/solo.jpg")  # not served: only the placed file can give it
    pd.DataFrame({"index": range(5), "image_link": [*shared, only], "group_id": "1",
                  "entity_name": "item_weight"}).to_csv(tmp_path / "catalog.csv", index=False)

    summary = run_extract(spark, load_config(overrides=SETTINGS), str(tmp_path / "catalog.csv"),
                          str(tmp_path / "store"), str(images_dir))

    images = pd.read_parquet(tmp_path / "store" / "images").set_index("image_link")
    for link in shared:  # fetched, each its own answer; never the placed file of another product
        assert (images.loc[link, "status"], images.loc[link, "source"]) == ("ok", "http"), link
        assert (images.loc[link, "width"], images.loc[link, "height"]) == (64, 48), link
    assert (images.loc[only, "status"], images.loc[only, "source"]) == ("ok", "plain_file")
    assert (images.loc[only, "width"], images.loc[only, "height"]) == (50, 50)
    assert image_server.hits["/plain/q.jpg"] - hits.get("/plain/q.jpg", 0) == 2
    assert image_server.hits["/plain/x.jpg"] - hits.get("/plain/x.jpg", 0) == 2
    assert summary.from_plain_files == 1 and " from_plain_files=1 " in summary.line(), summary.line()
