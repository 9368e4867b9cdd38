"""The server's configuration and the checks made before anything heavy loads: ``facelink serve`` refuses a port in
use first (:mod:`.port_check`), then reads its options into a :class:`ServerConfig` and refuses an unsafe exposure, in
a fraction of a second, and only then imports torch and loads the models (:mod:`.server`).

Imports here stay light (no numpy, torch, OpenCV or gRPC).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from facelink.cloud.serving.port_check import (  # noqa: F401 (ServeRefused, check_port_free: imported from here too)
    DEFAULT_HOST,
    DEFAULT_PORT,
    ServeRefused,
    check_port_free,
)

MAX_LABEL = 256  # characters of a request id, a frame's source or an enrolment's source_name

# Cosine similarity above which the best gallery match is reported as that person: the accuracy-maximising
# threshold for MobileFaceNet in the deployed setting (uncompressed gallery photo, face crop coded by the default
# model, face-v2 at its default quality 2) on 600 pairs of LFW images outside View 2 (98.2 % accuracy there) —
# benchmarks/results/threshold.json, made by
# `facelink bench calibrate-threshold --pairs 300 --model face-v2 --out benchmarks/results/threshold.json`.
# (face-ipr-q1, the default before it, gave 0.277 on the same pairs.)
DEFAULT_THRESHOLD = 0.265

# Channel options of the server's gRPC transport, beside the message limits. gRPC core holds back its answer to a
# call it ends for an error of its own (a message over the receive limit among them) for a random 100-1000 ms, a
# "tarpit" against clients that repeat bad calls; facelink turns it off so that every hostile call is answered within
# 100 ms. On a bare gRPC server (aio and thread-pool) with facelink serve's limit, a message 1 KiB over it is refused
# in 106-1006 ms with the tarpit (medians 117-177), in 1.3-7.2 ms without (medians 1.9-2.5), one of 17 MiB in
# 2.4-13.7 ms without (105-903 ms with); messages under the limit cost the same either way, and no other transport
# option tried (BDP probe, frame size, lookahead, one stream) moves the delay (benchmarks/results/grpc_refusal.json,
# made by `python -m facelink.benchmarks.grpc_refusal --calls 10 --out benchmarks/results/grpc_refusal.json`).
# Without the tarpit a client that sends over-limit messages one after another is answered sooner, but it has sent
# the bytes either way, and the message limit and the concurrent-call limit still bound what it holds open.
GRPC_TRANSPORT_OPTIONS: tuple[tuple[str, int], ...] = (("grpc.http.tarpit", 0),)


@dataclass
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    gallery: str = "facelink-gallery.db"
    recognizer: str = "mobilefacenet"
    models: list[str] | None = None  # default: every model in the registry
    default_model: str | None = None  # the model an edge should use (GetModelInfo); default: the registry's default
    threshold: float = DEFAULT_THRESHOLD
    top_k: int = 3
    # Limits (checked before the work they bound)
    max_frame_bytes: int = 1 << 20  # a container's bytes
    # A container's declared (padded) pixels; also the detection size of Enroll images. Sized for faces: aligned
    # crops and VGA full frames either way round (640x480 pads to 640x512), the largest the edge's benchmarks send.
    # Every pixel is legal work before a container can be found bad (the integer hyper-synthesis runs on the whole
    # declared size before the latent is read), time and memory in proportion (facelink bench attacks measures a
    # VGA frame and the largest container within this budget). Larger camera frames need --max-pixels.
    max_pixels: int = 640 * 512
    max_image_bytes: int = 8 << 20  # an Enroll image file's bytes
    max_image_pixels: int = 4096 * 4096  # an Enroll image's pixels, from its header
    # gRPC's own limit: above it a call is ended (RESOURCE_EXHAUSTED) as soon as the message's length is read, not
    # answered in-band; just above the frame and image limits, so that no message costs more than ~3 copies of it
    max_message_bytes: int = (8 << 20) + (64 << 10)
    decode_pixel_budget: int = 2 * 1024 * 1024  # pixels of large frames decoding at once (≈320 MB per megapixel)
    max_streams: int = 64  # concurrent Recognize streams
    stream_window: int = 8  # unanswered frames per stream before the server stops reading it
    workers: int = 2
    # torch's intra-op threads. 1 (the default): each network call on one core, and the synthesis and the recognizer
    # (each under its own lock) on two cores at once; 0: torch's own default (one per core), one network call at a
    # time in the process (what the server did before micro-batching)
    torch_threads: int = 1
    device: str | None = None
    # Throughput: micro-batches of the synthesis and the recognizer across streams
    batching: bool = True
    batch_max: int = 8  # 16 crops of 112×112 in one synthesis peak at +85 MB against +30 MB for 8, at equal cost
    batch_wait_ms: float = 2.0
    # Decode with a rate point's face-domain adapters where its bundle has them. Off by default: on 500 LFW pairs they
    # move recognition by -1.8 to +2.2 points per domain and rate point, no consistent gain
    # (benchmarks/results/adapters/summary.json).
    adapters: bool = False
    # Frames of zero latents through the recognition path before SERVING (every model, every crop template, a full
    # frame at the pixel budget, a burst of max_streams crops), so that no client's frame pays for first use
    # (:mod:`.warmup`)
    warmup: bool = True
    # Exactly-once delivery: answers kept per (device id, sequence) beside the gallery, by age and count.
    dedup_max_age_s: float = 7 * 86400.0
    dedup_max_entries: int = 1_000_000
    # The de-duplication store: default beside a gallery file (SQLite), or in the gallery's own database for a
    # postgresql:// gallery (every replica shares it); a file path or a postgresql:// URL to put it elsewhere.
    dedup_store: str | None = None
    # Security
    auth_tokens: str | None = None  # token file (facelink tokens add NAME ROLE --file F)
    tls_cert: str | None = None
    tls_key: str | None = None
    client_ca: str | None = None  # mutual TLS: clients must present a certificate signed by this CA
    insecure: bool = False  # allow plaintext or no tokens on a non-loopback address
    # Operations
    metrics_port: int | None = None  # Prometheus endpoint (0 picks a free port)
    metrics_host: str = "127.0.0.1"
    shutdown_grace_s: float = 10.0
    health_interval_s: float = 5.0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(cfg: ServerConfig) -> list[str]:
    """Refuse (:class:`ServeRefused`) what would be unsafe; returns warnings for what ``insecure`` lets through."""
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise ServeRefused("give both --tls-cert and --tls-key, or neither")
    if cfg.client_ca and not cfg.tls_cert:
        raise ServeRefused("--client-ca (mutual TLS) needs --tls-cert and --tls-key")
    if cfg.max_message_bytes < max(cfg.max_frame_bytes, cfg.max_image_bytes) + 4096:
        raise ServeRefused("max_message_bytes must exceed max_frame_bytes and max_image_bytes (by 4 KiB), so that "
                           "an oversize frame or image is answered, not cut off by gRPC")
    if is_loopback(cfg.host):
        return []
    missing = [what for what, ok in (("TLS (--tls-cert/--tls-key)", cfg.tls_cert), ("--auth-tokens",
                                                                                    cfg.auth_tokens)) if not ok]
    if missing and not cfg.insecure:
        raise ServeRefused(f"{cfg.host} is not a loopback address: serving on it needs {' and '.join(missing)}, or "
                           "--insecure to serve without them")
    return [f"serving {cfg.host} without {' and '.join(missing)} (--insecure)"] if missing else []
