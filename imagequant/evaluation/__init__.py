"""Scoring predictions against labels (the challenge F1 and error analysis) and measuring OCR recall."""
