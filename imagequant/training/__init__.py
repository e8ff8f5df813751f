"""Training the learned scorer: examples from the training table, the fitting loop, cross-validation."""
