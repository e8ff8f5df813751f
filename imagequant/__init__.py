"""ImageQuant: predict product entity values (weight, voltage, dimensions, ...) from catalog images."""

__version__ = "0.1.0"

# The OCR engines register their settings sections and names with imagequant.config (which imports no
# engine); importing the registry here makes that happen before any configuration loads, whichever
# imagequant module is imported first. It loads no engine and no image library.
import imagequant.ocr.zoo  # noqa: E402, F401
