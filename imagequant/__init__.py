"""ImageQuant: predict product entity values (weight, voltage, dimensions, ...) from catalog images."""

__version__ = "0.1.0"
