"""Prometheus metrics of the facelink server (``facelink serve --metrics-port P``; scrape ``http://HOST:P/metrics``).

- ``facelink_frames_total{outcome, code}``: frames answered, ``outcome`` "result" or "error", ``code`` the Error
  code's name (``OK`` for results).
- ``facelink_decode_seconds``, ``facelink_recognize_seconds``, ``facelink_frame_seconds``: histograms of entropy
  decoding + synthesis, of detection/alignment/embedding/match, and end to end (frame read → answer ready).
- ``facelink_bytes_received_total``: container bytes received over Recognize.
- ``facelink_frames_in_flight``, ``facelink_streams_active``: gauges.
- ``facelink_gallery_identities``: identities in the gallery for the server's recognizer (read at scrape time).
- ``facelink_enrollments_total{outcome}``, ``facelink_calls_denied_total{code}``, ``facelink_batch_size{stage}``.

Each server has its own registry (several servers in one process, as in tests, do not mix their counts).
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.frames = Counter("facelink_frames", "Frames answered", ["outcome", "code"], registry=r)
        self.decode_seconds = Histogram("facelink_decode_seconds", "Entropy decoding and synthesis per frame",
                                        buckets=_LATENCY, registry=r)
        self.recognize_seconds = Histogram("facelink_recognize_seconds", "Detection, alignment, embedding and "
                                           "gallery match per frame", buckets=_LATENCY, registry=r)
        self.frame_seconds = Histogram("facelink_frame_seconds", "End to end per frame, from its arrival to its "
                                       "answer", buckets=_LATENCY, registry=r)
        self.bytes_in = Counter("facelink_bytes_received", "Container bytes received over Recognize", registry=r)
        self.in_flight = Gauge("facelink_frames_in_flight", "Frames read and not yet answered", registry=r)
        self.streams = Gauge("facelink_streams_active", "Open Recognize streams", registry=r)
        self.gallery_identities = Gauge("facelink_gallery_identities", "Identities in the gallery", registry=r)
        self.enrollments = Counter("facelink_enrollments", "Enroll calls by outcome", ["outcome"], registry=r)
        self.denied = Counter("facelink_calls_denied", "Calls refused by authentication", ["code"], registry=r)
        self.batch_size = Histogram("facelink_batch_size", "Frames per micro-batch", ["stage"],
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)

    def frame_answered(self, outcome: str, code: str, seconds: float) -> None:
        self.frames.labels(outcome, code).inc()
        self.frame_seconds.observe(seconds)

    def watch_gallery(self, size) -> None:
        """``size()``: the gallery's identity count, called at each scrape (errors read as -1)."""
        def read():
            try:
                return float(size())
            except Exception:  # noqa: BLE001 - a scrape must not fail because the gallery is down
                return -1.0
        self.gallery_identities.set_function(read)

    def serve(self, port: int, host: str = "127.0.0.1"):
        """Start the HTTP endpoint; returns (server, port) with the port actually bound (0 picks one)."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        return server, server.server_address[1]

    def text(self) -> str:
        return generate_latest(self.registry).decode()
