"""What every step shares, free of Spark, torch and image libraries: units and entities, OCR tokens and
box geometry, the store's table declarations and locations, and the challenge's metrics."""
