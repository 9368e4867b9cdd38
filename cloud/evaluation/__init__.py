"""Evaluation: the verification protocol, the learned codec as one object, bit-exactness, result provenance."""
