"""The Spark part: the session, the functions Spark runs (mapInPandas/mapInArrow) and the Parquet feature store."""
