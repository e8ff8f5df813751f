"""The per-image and per-row work of the jobs, free of Spark: the Spark UDFs and the plain loop call it."""
