"""Catalog profile: what a catalog holds before any image is fetched (rows, images, groups, labels, units).

The Spark transforms are pure DataFrame-in, DataFrame-out functions (tests call them directly); the
driver collects two small aggregates and turns them into ``profile.json`` and an HTML report:

1. :func:`label_summary` — rows per (entity, row status, label kind, unit, log10 value bin), from which
   entity counts, label kinds, unit distributions and value histograms all follow;
2. :func:`key_sizes` — rows per image link and per group, folded into size distributions.

Labels are classified by :func:`imagequant.core.units.parse_label` and rows by
:func:`imagequant.catalog.classify_row` inside one ``mapInPandas`` (:func:`label_rows`), the same code
that reads catalogs everywhere else.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from imagequant import report
from imagequant.catalog import REQUIRED_COLUMNS, CatalogInfo, classify_row, inspect_catalog
from imagequant.core.units import ENTITIES, parse_label
from imagequant.spark.session import job_step, runtime_conf

# parse_label's kinds -> the names the profile shows (``value`` is a plain, usable label)
LABEL_KINDS: dict[str, str] = {
    "value": "plain",
    "range": "range",
    "unit_not_allowed": "unit_not_allowed",
    "unparseable": "unparseable",
    "empty": "unlabeled",
}
KIND_ORDER = ("plain", "range", "unit_not_allowed", "unparseable", "unlabeled")
KIND_COLORS = {"plain": "#55A868", "range": "#DD8452", "unit_not_allowed": "#C44E52",
               "unparseable": "#8172B3", "unlabeled": "#8C8C8C"}
BINS_PER_DECADE = 4  # log10 histogram resolution: 4 bins per factor of ten

CATALOG_COLUMNS = ("image_link", "group_id", "entity_name", "entity_value")
LABELED_SCHEMA = T.StructType(
    [T.StructField(c, T.StringType(), True) for c in CATALOG_COLUMNS]
    + [
        T.StructField("row_status", T.StringType(), False),
        T.StructField("label_kind", T.StringType(), False),
        T.StructField("unit", T.StringType(), True),
        T.StructField("value", T.DoubleType(), True),
    ]
)


# --- reading -------------------------------------------------------------------------------------------


def read_catalog_frame(spark: SparkSession, path: str | Path, info: CatalogInfo | None = None) -> DataFrame:
    """The catalog as a DataFrame of the four catalog columns, all strings, trimmed (empty -> null).

    ``inspect_catalog`` runs first, so a missing file or column raises CatalogError before Spark reads.
    A .csv.gz is read directly (one partition, since gzip cannot be split; see :func:`spread`).
    """
    info = info or inspect_catalog(path)
    if info.format == "parquet":
        frame = spark.read.parquet(str(info.path))
    else:
        # all columns as strings (no inference: group ids and values must stay text); quoted fields may
        # hold commas, and a BOM-less UTF-8 header is what challenge files have
        frame = spark.read.csv(str(info.path), header=True, inferSchema=False, multiLine=False,
                               escape='"', encoding="UTF-8")
    # a BOM or padded header must not hide a column (inspect_catalog reads the header the same way)
    frame = frame.toDF(*[c.lstrip("\ufeff").strip() for c in frame.columns])
    columns = []
    for name in CATALOG_COLUMNS:
        if name in frame.columns:
            text = F.trim(F.col(f"`{name}`").cast("string"))
            columns.append(F.when(text == "", None).otherwise(text).alias(name))
        else:  # an unlabeled catalog has no entity_value
            columns.append(F.lit(None).cast("string").alias(name))
    return frame.select(*columns)


def spread(frame: DataFrame, partitions: int) -> DataFrame:
    """Repartitions a frame that arrived in fewer than ``partitions`` partitions (a gzip CSV arrives in one)."""
    if frame.rdd.getNumPartitions() < partitions:
        return frame.repartition(partitions)
    return frame


# --- transforms (pure DataFrame -> DataFrame) ----------------------------------------------------------


def classify_pandas(batch: pd.DataFrame) -> pd.DataFrame:
    """Adds row_status, label_kind, unit, value to a pandas batch of catalog rows (the mapInPandas body)."""
    out = batch[list(CATALOG_COLUMNS)].copy()
    statuses, kinds, units, values = [], [], [], []
    for link, entity, label in zip(out["image_link"], out["entity_name"], out["entity_value"], strict=True):
        statuses.append(classify_row(link, entity)[0])
        known_entity = entity if isinstance(entity, str) and entity in ENTITIES else None
        parsed = parse_label(label, known_entity)
        kinds.append(LABEL_KINDS.get(parsed.kind, "unparseable"))
        units.append(parsed.unit)
        values.append(parsed.value if parsed.kind == "value" else None)
    out["row_status"] = statuses
    out["label_kind"] = kinds
    out["unit"] = units
    out["value"] = pd.array(values, dtype="Float64")
    return out


def _classify_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for batch in batches:
        yield classify_pandas(batch)


def label_rows(frame: DataFrame) -> DataFrame:
    """Catalog rows -> the same rows with row_status, label_kind, unit and (plain labels only) value."""
    return frame.select(*CATALOG_COLUMNS).mapInPandas(_classify_batches, LABELED_SCHEMA)


def label_summary(labeled: DataFrame, bins_per_decade: int = BINS_PER_DECADE) -> DataFrame:
    """Row counts per (entity_name, row_status, label_kind, unit, value_bin).

    ``value_bin`` is floor(log10(value) * bins_per_decade) for plain positive values, null otherwise
    (bin b covers [10^(b/bpd), 10^((b+1)/bpd))). Every per-entity figure of the profile follows from this
    one small table.
    """
    value_bin = F.when(
        (F.col("label_kind") == "plain") & (F.col("value") > 0),
        F.floor(F.log10(F.col("value")) * F.lit(bins_per_decade)).cast("int"),
    )
    return (
        labeled.withColumn("value_bin", value_bin)
        .groupBy("entity_name", "row_status", "label_kind", "unit", "value_bin")
        .agg(F.count(F.lit(1)).alias("rows"))
    )


def key_sizes(frame: DataFrame) -> DataFrame:
    """Size distributions of images and groups in one aggregate.

    Output rows: key_kind ("image", "no_link" or "group"), key (the group id; null for images, which are
    folded), rows (rows on that key), entities (distinct entities asked of it), keys (how many keys share
    those sizes). Rows without an image link form the one ``no_link`` key instead of an image.
    """
    images = frame.select(
        F.when(F.col("image_link").isNull(), "no_link").otherwise("image").alias("key_kind"),
        F.col("image_link").alias("key"),
        "entity_name",
    )
    groups = frame.select(
        F.lit("group").alias("key_kind"), F.coalesce(F.col("group_id"), F.lit("")).alias("key"), "entity_name"
    )
    per_key = images.unionByName(groups).groupBy("key_kind", "key").agg(
        F.count(F.lit(1)).alias("rows"), F.countDistinct("entity_name").alias("entities")
    )
    # images are only counted by size; groups keep their id (a bounded category code) for the top list
    folded_key = F.when(F.col("key_kind") == "group", F.col("key"))
    return per_key.groupBy("key_kind", folded_key.alias("key"), "rows", "entities").agg(
        F.count(F.lit(1)).alias("keys")
    )


# --- driver-side assembly (plain Python over the collected aggregates) ---------------------------------


def _quantile(sizes: Mapping[int, int], q: float) -> float:
    """The q-quantile of a distribution given as {size: how many} (lower value at ties)."""
    total = sum(sizes.values())
    if not total:
        return 0.0
    target = q * (total - 1)
    seen = 0
    for size in sorted(sizes):
        seen += sizes[size]
        if seen > target:
            return float(size)
    return float(max(sizes))


def _power_of_two_bin(size: int) -> str:
    """The size class of ``size``: "1", "2-3", "4-7", "8-15", ..."""
    low = 1 << (max(size, 1).bit_length() - 1)
    return str(low) if low == 1 else f"{low}-{2 * low - 1}"


def _power_of_two_labels(largest: int) -> list[str]:
    labels, low = [], 1
    while low <= max(largest, 1):
        labels.append(_power_of_two_bin(low))
        low *= 2
    return labels


def summarize_keys(rows: Sequence[Mapping[str, Any]], top: int = 15) -> dict[str, Any]:
    """Image and group figures from :func:`key_sizes` rows."""
    image_sizes: Counter[int] = Counter()
    repeated_pairs = 0
    group_sizes: Counter[int] = Counter()
    groups: list[tuple[str, int]] = []
    no_link = 0
    for row in rows:
        if row["key_kind"] == "no_link":
            no_link += int(row["rows"]) * int(row["keys"])
        elif row["key_kind"] == "image":
            image_sizes[int(row["rows"])] += int(row["keys"])
            repeated_pairs += (int(row["rows"]) - int(row["entities"])) * int(row["keys"])
        else:
            group_sizes[int(row["rows"])] += int(row["keys"])
            groups.append((str(row["key"]), int(row["rows"])))
    shared = {size: n for size, n in image_sizes.items() if size > 1}
    size_bins: Counter[str] = Counter()
    for size, n in group_sizes.items():
        size_bins[_power_of_two_bin(size)] += n
    groups.sort(key=lambda g: (-g[1], g[0]))
    return {
        "distinct_images": sum(image_sizes.values()),
        "rows_with_image": sum(size * n for size, n in image_sizes.items()),
        "rows_without_link": no_link,
        # distinct values of the image_link column, the empty one included (how the challenge counts images)
        "distinct_link_values": sum(image_sizes.values()) + (1 if no_link else 0),
        "rows_per_image": {str(size): image_sizes[size] for size in sorted(image_sizes)},
        "duplicate_links": {
            "images_with_several_rows": sum(shared.values()),
            "rows_on_shared_images": sum(size * n for size, n in shared.items()),
            # rows asking an entity already asked of the same image (same link, same entity_name)
            "repeated_image_entity_rows": repeated_pairs,
        },
        "groups": {
            "distinct_groups": len(groups),
            "min_rows": min(group_sizes) if group_sizes else 0,
            "median_rows": _quantile(group_sizes, 0.5),
            "max_rows": max(group_sizes) if group_sizes else 0,
            "sizes": {str(size): group_sizes[size] for size in sorted(group_sizes)},
            # groups per size class 1, 2-3, 4-7, ... (what the group-size chart shows)
            "size_classes": {label: size_bins[label] for label in _power_of_two_labels(max(group_sizes, default=0))
                             if size_bins[label]},
            "largest": [{"group_id": g, "rows": n} for g, n in groups[:top]],
        },
    }


def summarize_labels(rows: Sequence[Mapping[str, Any]], bins_per_decade: int = BINS_PER_DECADE) -> dict[str, Any]:
    """Row, status, entity, label-kind, unit and value-histogram figures from :func:`label_summary` rows."""
    total = 0
    statuses: Counter[str] = Counter()
    kinds_all: Counter[str] = Counter()
    entity_rows: Counter[str] = Counter()
    kinds: dict[str, Counter[str]] = defaultdict(Counter)
    units: dict[str, Counter[str]] = defaultdict(Counter)
    other_units: dict[str, Counter[str]] = defaultdict(Counter)
    range_units: dict[str, Counter[str]] = defaultdict(Counter)
    bins: dict[str, dict[str, Counter[int]]] = defaultdict(lambda: defaultdict(Counter))
    nonpositive: Counter[str] = Counter()
    for row in rows:
        n = int(row["rows"])
        entity = row["entity_name"] if row["entity_name"] is not None else "(empty)"
        kind = row["label_kind"]
        total += n
        statuses[row["row_status"]] += n
        kinds_all[kind] += n
        entity_rows[entity] += n
        kinds[entity][kind] += n
        unit = row["unit"] if row["unit"] is not None else "(none)"
        if kind == "plain":
            units[entity][unit] += n
            if row["value_bin"] is None:
                nonpositive[entity] += n
            else:
                bins[entity][unit][int(row["value_bin"])] += n
        elif kind == "unit_not_allowed":
            other_units[entity][unit] += n
        elif kind == "range":
            range_units[entity][unit] += n

    def ordered(counter: Counter[str]) -> dict[str, int]:
        return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))

    entities: dict[str, Any] = {}
    known_first = [e for e in ENTITIES if e in entity_rows] + sorted(e for e in entity_rows if e not in ENTITIES)
    for entity in known_first:
        histograms = {}
        for unit, counter in sorted(bins[entity].items(), key=lambda kv: -sum(kv[1].values())):
            lo, hi = min(counter), max(counter)
            histograms[unit] = {
                "log10_left_edges": [b / bins_per_decade for b in range(lo, hi + 1)],
                "counts": [counter.get(b, 0) for b in range(lo, hi + 1)],
            }
        entities[entity] = {
            "rows": entity_rows[entity],
            "label_kinds": {k: kinds[entity][k] for k in KIND_ORDER if kinds[entity][k]},
            "units": ordered(units[entity]),
            "units_not_allowed": ordered(other_units[entity]),
            "range_units": ordered(range_units[entity]),
            "nonpositive_values": nonpositive[entity],
            "value_histograms": histograms,
        }
    return {
        "rows": total,
        "row_status": ordered(statuses),
        "label_kinds": {k: kinds_all[k] for k in KIND_ORDER if kinds_all[k]},
        "bins_per_decade": bins_per_decade,
        "entities": entities,
    }


def profile_frame(
    spark: SparkSession, frame: DataFrame, bins_per_decade: int = BINS_PER_DECADE, arrow_batch: int = 10_000
) -> dict[str, Any]:
    """Runs the two aggregates over a catalog frame (four string columns) and returns the profile figures."""
    frame = frame.cache()
    try:
        with runtime_conf(spark, {"spark.sql.execution.arrow.maxRecordsPerBatch": str(arrow_batch)}), \
                job_step(spark, "profiling the catalog"):
            label_rows_ = [r.asDict() for r in label_summary(label_rows(frame), bins_per_decade).collect()]
            size_rows = [r.asDict() for r in key_sizes(frame).collect()]
    finally:
        frame.unpersist()
    labels = summarize_labels(label_rows_, bins_per_decade)
    keys = summarize_keys(size_rows)
    return {
        "rows": labels["rows"],
        "distinct_images": keys["distinct_images"],
        "rows_without_link": keys["rows_without_link"],
        "distinct_link_values": keys["distinct_link_values"],
        "distinct_groups": keys["groups"]["distinct_groups"],
        "row_status": labels["row_status"],
        "label_kinds": labels["label_kinds"],
        "rows_per_image": keys["rows_per_image"],
        "duplicate_links": keys["duplicate_links"],
        "groups": keys["groups"],
        "bins_per_decade": labels["bins_per_decade"],
        "entities": labels["entities"],
    }


def profile_catalog(spark: SparkSession, path: str | Path, bins_per_decade: int = BINS_PER_DECADE) -> dict[str, Any]:
    """Reads and profiles one catalog file; the result is what ``profile.json`` holds."""
    info = inspect_catalog(path)
    frame = spread(read_catalog_frame(spark, path, info), max(2, spark.sparkContext.defaultParallelism))
    figures = profile_frame(spark, frame, bins_per_decade)
    return {
        "catalog": str(info.path),
        "format": info.format,
        "labeled": info.labeled,
        "columns": list(info.columns),
        "required_columns": list(REQUIRED_COLUMNS),
        **figures,
    }


# --- report --------------------------------------------------------------------------------------------


def write_profile_report(profile: Mapping[str, Any], report_dir: str | Path) -> Path:
    """Writes profile.json, the PNG figures and report.html into ``report_dir``; returns the HTML path."""
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / "profile.json", profile)
    entities: dict[str, Any] = profile["entities"]
    names = list(entities)
    page = report.HtmlReport(
        "Catalog profile", f"{profile['catalog']} ({profile['format']}, {'labeled' if profile['labeled'] else 'unlabeled'})"
    )

    page.heading("Rows and images")
    dup = profile["duplicate_links"]
    page.key_values({
        "rows": profile["rows"],
        "distinct images (non-empty links)": profile["distinct_images"],
        "rows without a link": profile["rows_without_link"],
        "distinct link values (empty included)": profile["distinct_link_values"],
        "rows per image (mean)": profile["rows"] / profile["distinct_images"] if profile["distinct_images"] else 0.0,
        "images with several rows": dup["images_with_several_rows"],
        "rows on those images": dup["rows_on_shared_images"],
        "rows repeating an (image, entity) pair": dup["repeated_image_entity_rows"],
        "distinct groups": profile["distinct_groups"],
        **{f"rows with status {k}": v for k, v in profile["row_status"].items()},
    })
    sizes = profile["rows_per_image"]
    page.figure(report.column_chart(
        out / "rows_per_image.png", list(sizes), list(sizes.values()),
        title="Rows per image", xlabel="rows sharing one image link", ylabel="images (log scale)"),
        "Each row asks one entity of one image; an image asked several entities appears in several rows.")

    groups = profile["groups"]
    page.heading("Groups")
    page.paragraph(f"{groups['distinct_groups']:,} groups; rows per group: min {groups['min_rows']:,}, "
                   f"median {groups['median_rows']:,.0f}, max {groups['max_rows']:,}.")
    classes = groups["size_classes"]
    page.figure(report.column_chart(
        out / "group_sizes.png", list(classes), list(classes.values()),
        title="Group sizes", xlabel="rows in the group", ylabel="groups", log_y=False))
    page.table(["largest groups", "rows"], [[g["group_id"], g["rows"]] for g in groups["largest"]])

    page.heading("Entities")
    page.figure(report.bar_chart(
        out / "entity_rows.png", names, [entities[e]["rows"] for e in names],
        title="Rows per entity", xlabel="rows", value_format="{:,.0f}"))
    page.table(
        ["entity", "rows", *KIND_ORDER],
        [[e, entities[e]["rows"], *[entities[e]["label_kinds"].get(k, 0) for k in KIND_ORDER]] for e in names],
    )
    if not profile["labeled"]:
        page.note("The catalog has no entity_value column: label kinds, units and value spreads need labels.")
        return page.write(out / "report.html")

    kinds_present = [k for k in KIND_ORDER if any(entities[e]["label_kinds"].get(k) for e in names)]
    page.figure(report.stacked_bars(
        out / "label_kinds.png", names,
        {k: [entities[e]["label_kinds"].get(k, 0) for e in names] for k in kinds_present},
        title="Kinds of label per entity", normalize=True, series_colors=KIND_COLORS),
        "plain: a number and an allowed unit; range: [a, b] unit (never matched by the metric); "
        "unit_not_allowed: a unit outside the entity's list; unparseable: anything else.")

    page.heading("Units")
    panels = []
    for e in names:
        counts = entities[e]["units"]
        total = sum(counts.values())
        panels.append((f"{e} ({total:,} plain labels)", list(counts), [n / total for n in counts.values()]))
    page.figure(report.bar_grid(out / "units.png", panels, title="Units of plain labels per entity",
                                xlabel="share of the entity's plain labels"))
    page.table(
        ["entity", "units of plain labels", "units not allowed"],
        [[e, ", ".join(f"{u} {n:,}" for u, n in entities[e]["units"].items()),
          ", ".join(f"{u} {n:,}" for u, n in list(entities[e]["units_not_allowed"].items())[:8])] for e in names],
    )

    page.heading("Spread of values")
    width = 1.0 / profile["bins_per_decade"]
    panels = [
        report.HistogramPanel(
            e,
            {u: (h["log10_left_edges"], h["counts"]) for u, h in entities[e]["value_histograms"].items()},
            bin_width=width,
        )
        for e in names
    ]
    page.figure(report.log_histogram_grid(
        out / "value_spread.png", panels, title="Plain label values per unit (log10 bins)"),
        f"{profile['bins_per_decade']} bins per factor of ten; the six most frequent units per entity.")
    nonpositive = {e: entities[e]["nonpositive_values"] for e in names if entities[e]["nonpositive_values"]}
    if nonpositive:
        page.note("Plain labels with a value of zero or less (not on the log axes): "
                  + ", ".join(f"{e} {n:,}" for e, n in nonpositive.items()))
    return page.write(out / "report.html")
