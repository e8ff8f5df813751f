"""From OCR tokens to candidates: lines, mentions, and the evidence about each value+unit found (pure)."""
