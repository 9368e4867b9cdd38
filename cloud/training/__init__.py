"""Training: the codec's training loop, its identity loss, data sets and splits, export into the registry."""
