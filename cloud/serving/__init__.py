"""Serving: the gRPC server and what it runs per frame (decoder, recognizers, detectors, gallery)."""
