"""The Spark part: the session, the pandas UDFs and the Parquet feature store."""
