"""The server's warm-up: work pushed through its own recognition path before it reports SERVING (as Triton's model
warm-up does), so that no client's frame pays for first use.

A network's first call in a process costs memory that the process then keeps for reuse: the synthesis built for a
model (a frozen TorchScript copy, traced and checked), torch's and glibc's working memory for a micro-batch on each
stage's thread, a YuNet on each worker thread. Without a warm-up the first frame after a start paid for it: +53 MB
and ~0.4 s for the first aligned crop, +67 MB for the first burst of 64 crops at once, where the same work again
costs +1.4 and +11 MB (``facelink bench attacks``). The warm-up frames are containers of zero latents made here from
a model's own tables (no encoder, no pixels from anyone): a grey image, a crop of every crop template and a full
frame at the pixel budget, each through entropy decoding, synthesis, detection or alignment and the recognizer as a
client's frame goes, and the crops twice as a burst of ``max_streams`` frames at once; none larger than
``max_frame_bytes``, which no client's frame exceeds either (the full frame shrinks until it fits). Nothing reaches
the gallery or the metrics, and health says NOT_SERVING until it is done (about 4 s on 2 cores, 7 models: ``facelink
serve --no-warmup`` skips it).
"""
from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from facelink.shared import bitstream, codec, registry
from facelink.shared.alignment import TEMPLATE_IDS
from facelink.v1 import facelink_pb2 as pb

log = logging.getLogger("facelink.serve")


def zero_container(bundle: registry.ModelBundle, height: int, width: int, template_id: int = 0) -> bytes:
    """A valid container of ``bundle`` for a height×width image whose latents are all zero (it decodes to a flat
    image), in the format the edge writes for that model (version 3 at quality 0 for a variable-rate one)."""
    tables = bundle.tables
    version = bitstream.VARIABLE_RATE_VERSION if tables.variable_rate else bitstream.FORMAT_VERSION
    frame = bitstream.Frame(bundle.model_id, height, width, (), template_id, version)
    zh, zw = frame.z_shape
    y = np.zeros((tables.M, 4 * zh, 4 * zw), np.float32)
    z = np.zeros((tables.N, zh, zw), np.float32)
    streams, _ = codec.encode_latents(tables, y, z, height, width, version)
    quality = 0.0 if tables.variable_rate else None
    return bitstream.pack(bitstream.Frame(bundle.model_id, height, width, streams, template_id, version, quality))


def full_frame_shape(max_pixels: int) -> tuple[int, int]:
    """The largest 4:5 (height:width) frame whose padded size fits ``max_pixels`` (640×512 padded for the default
    budget: a VGA frame), for the warm-up's full frame."""
    step = 64  # the codec's padding
    width = max(step, int((max_pixels * 5 / 4) ** 0.5) // step * step)
    height = max(step, (max_pixels // width) // step * step)
    return height, width


async def warm_up(service, burst: int) -> dict:
    """Push zero-latent frames of every loaded model through ``service``'s recognition path (the same calls a
    client's frames make); returns what was done, for the start-up log. A frame the path refuses is an error here:
    the server would refuse a client's frame the same way."""
    t0 = time.perf_counter()
    recognize = service.warmup_recognize
    limit = service.cfg.max_frame_bytes  # no client can send a larger container: no warm-up frame is larger either
    frames, skipped = 0, 0
    default = service.default_bundle()
    for bundle in service.decoder.bundles.values():
        for tid, template in TEMPLATE_IDS.items():
            data = zero_container(bundle, template.height, template.width, tid)
            if len(data) > limit:
                skipped += 1
                continue
            await recognize(pb.RecognizeRequest(id="warm-up", bitstream=data))
            frames += 1
    full = largest_full_frame(default, service.cfg.max_pixels, limit)
    if full is None:
        skipped += 1
    else:
        await recognize(pb.RecognizeRequest(id="warm-up", bitstream=full))
        frames += 1
    crop = next(iter(TEMPLATE_IDS.items()))
    data = zero_container(default, crop[1].height, crop[1].width, crop[0])
    if len(data) <= limit:
        for _ in range(2):  # twice: the second burst finds the working memory the first one left
            await asyncio.gather(*(recognize(pb.RecognizeRequest(id="warm-up", bitstream=data))
                                   for _ in range(burst)))
        frames += 2 * burst
    else:
        skipped += 1
    return {"frames": frames, "skipped_over_max_frame_bytes": skipped, "models": len(service.decoder.bundles),
            "seconds": round(time.perf_counter() - t0, 2)}


def largest_full_frame(bundle: registry.ModelBundle, max_pixels: int, max_bytes: int) -> bytes | None:
    """The warm-up's full frame: a zero-latent container at the pixel budget, or the largest smaller one whose
    container fits ``max_bytes`` (a server capped at a few kilobytes per frame never receives a VGA frame of a
    model whose zero latents cost more); None when not even a 64×64 one fits."""
    pixels = max_pixels
    while True:
        h, w = full_frame_shape(pixels)
        data = zero_container(bundle, h, w)
        if len(data) <= max_bytes:
            return data
        if h * w <= 64 * 64:
            return None
        pixels = h * w // 2
