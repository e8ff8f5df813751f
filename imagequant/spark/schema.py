"""Spark forms of the store's tables, derived from their one declaration in :mod:`imagequant.core.schema`."""

from __future__ import annotations

from pyspark.sql import types as T

from imagequant.core.schema import (
    IMAGE_EVIDENCE,
    IMAGES,
    OCR_STAGE,
    PREDICTIONS,
    ROWS,
    Column,
    Table,
)

_SCALARS: dict[str, T.DataType] = {
    "string": T.StringType(), "int": T.IntegerType(), "long": T.LongType(), "float": T.FloatType(),
    "double": T.DoubleType(), "binary": T.BinaryType(), "bool": T.BooleanType(),
}


def spark_type(column: Column) -> T.DataType:
    element = column.element_kind
    return T.ArrayType(_SCALARS[element]) if element is not None else _SCALARS[column.kind]


def spark_schema(table: Table, nullable: bool | None = None) -> T.StructType:
    """The table as a StructType; ``nullable`` overrides every column's (joins and readers need True)."""
    return T.StructType([
        T.StructField(c.name, spark_type(c), c.nullable if nullable is None else nullable) for c in table.columns
    ])


IMAGE_SCHEMA = spark_schema(IMAGES)
ROW_SCHEMA = spark_schema(ROWS)
OCR_STAGE_SCHEMA = spark_schema(OCR_STAGE)
IMAGE_EVIDENCE_SCHEMA = spark_schema(IMAGE_EVIDENCE, nullable=True)
PREDICTIONS_SCHEMA = spark_schema(PREDICTIONS, nullable=True)
