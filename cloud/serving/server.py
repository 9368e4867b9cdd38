"""The facelink cloud server: grpc.aio, with health checking, reflection, authentication, work limits and metrics.

Per frame: container → header checks (bytes, declared pixels) → entropy decoding → synthesis → detect/align →
recognizer → gallery match. A bad frame is answered in-band with an :class:`Error` carrying its request id, and the
stream goes on. Answers come in the order the frames came.

Concurrency: worker threads share no mutable detector or recognizer state (:mod:`.recognition`). With batching on
(the default), up to ``stream_window`` frames of each stream are in flight at once, and the synthesis and the
recognizer run in micro-batches across all streams (:mod:`.batching`); ``--batching off`` is the per-frame path, one
frame per stream at a time unless ``--stream-window`` says otherwise.

Limits before work (:mod:`.limits`): a container over ``max_frame_bytes`` or declaring more than ``max_pixels``
(padded) pixels is refused from its header, before entropy decoding; frames over 256×256 take their pixels from a
shared decode budget; an Enroll image is sized from its PNG/JPEG/WebP header (:mod:`facelink.shared.image_header`)
before it is decoded; gRPC's message limit (``max_message_bytes``) sits just above ``max_frame_bytes`` and
``max_image_bytes``, so that an oversize frame gets its own FRAME_TOO_LARGE answer and the stream goes on, while a
message over gRPC's limit ends its call with RESOURCE_EXHAUSTED before it is read into memory; at most
``max_streams`` Recognize streams (more: RESOURCE_EXHAUSTED); a stream is not read past ``stream_window``
unanswered frames (back-pressure).

Security: TLS (``--tls-cert/--tls-key``), mutual TLS (``--client-ca``), bearer tokens with roles (``--auth-tokens``,
:mod:`.auth`). Plaintext or unauthenticated service only on a loopback address unless ``--insecure``. The port is
bound exclusively (no SO_REUSEPORT): a second server on a port in use refuses to start.

Operations: Prometheus metrics (``--metrics-port``, :mod:`.metrics`); grpc.health SERVING only while the models are
loaded and the gallery answers; SIGTERM → NOT_SERVING, no new streams, frames in flight answered within the grace
period, streams ended with UNAVAILABLE (resend elsewhere), clean exit; SIGHUP re-reads the token file.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.metadata
import json
import logging
import signal
import threading
import time
from pathlib import Path

import cv2
import grpc
import numpy as np
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from facelink.cloud.serving import auth as authmod
from facelink.cloud.serving import limits, warmup
from facelink.cloud.serving.batching import MicroBatcher
from facelink.cloud.serving.decoder import CloudDecoder
from facelink.cloud.serving.dedup import DedupError, Deduplicator, DedupStore, path_beside
from facelink.cloud.serving.gallery import Gallery, GalleryError, GalleryUnavailable, NotFoundError, is_postgres_url
from facelink.cloud.serving.metrics import Metrics
from facelink.cloud.serving.recognition import FacePipeline, Identification, inference_lock
from facelink.cloud.serving.recognizers import get_recognizer
from facelink.cloud.serving.settings import (  # noqa: F401 - importable from here too
    GRPC_TRANSPORT_OPTIONS,
    MAX_LABEL,
    ServerConfig,
    ServeRefused,
    check_exposure,
    check_port_free,
    is_loopback,
)
from facelink.shared import bitstream, codec, image_header
from facelink.shared.alignment import TEMPLATE_IDS
from facelink.shared.registry import DEFAULT_MODEL
from facelink.v1 import facelink_pb2 as pb
from facelink.v1 import facelink_pb2_grpc as pb_grpc

log = logging.getLogger("facelink.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FaceLink"].full_name
HEALTH_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


def _package_version() -> str:
    try:
        return importlib.metadata.version("facelink")
    except importlib.metadata.PackageNotFoundError:  # running from a tree that was never installed
        return "0+unknown"


SERVER_VERSION = _package_version()
MAX_TOP_K = 10  # matches one answer may list (an edge token must not page through the gallery)
MAX_DETAILS = 300  # characters of a status message (gRPC sends it in trailing metadata)


def server_credentials(cfg: ServerConfig) -> grpc.ServerCredentials | None:
    if not cfg.tls_cert:
        return None
    try:
        key, cert = Path(cfg.tls_key).read_bytes(), Path(cfg.tls_cert).read_bytes()
        ca = Path(cfg.client_ca).read_bytes() if cfg.client_ca else None
    except OSError as e:
        raise ServeRefused(f"cannot read {e.filename}: {e.strerror}") from None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


def _short(message: str) -> str:
    return message if len(message) <= MAX_DETAILS else message[:MAX_DETAILS] + "…"


class FaceLinkService(pb_grpc.FaceLinkServicer):
    def __init__(self, cfg: ServerConfig, tokens: authmod.TokenStore | None = None, metrics: Metrics | None = None):
        self.cfg = cfg
        self.tokens = tokens
        self.metrics = metrics or Metrics()
        if cfg.torch_threads < 0:
            raise ServeRefused(f"torch_threads must be 0 (torch's default) or more, got {cfg.torch_threads}")
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        # One lock for every network call when each call uses several cores; a lock per network on one thread each,
        # and numpy's BLAS (the integer hyper-synthesis of entropy decoding) on one thread too: worker threads, not
        # a library's spinning pool, use the cores.
        one_core = torch.get_num_threads() == 1
        if one_core:
            from threadpoolctl import threadpool_limits

            threadpool_limits(1, user_api="blas")
        self.synth_lock = threading.Lock() if one_core else inference_lock
        # channels_last with batching on; batching off is the per-frame path as it was (torch's default layout)
        self.decoder = CloudDecoder(cfg.models, device=cfg.device, adapters="on" if cfg.adapters else "off",
                                    max_pixels=cfg.max_pixels, channels_last=cfg.batching)
        recognizer = get_recognizer(cfg.recognizer, cfg.device)
        self.gallery = Gallery(cfg.gallery, recognizer.name)
        self.pipeline = FacePipeline(recognizer, self.gallery, threshold=cfg.threshold,
                                     lock=threading.Lock() if one_core else inference_lock)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="facelink")
        # de-duplicated frames wait there for an earlier delivery's answer: never in the pool the work needs
        self.dedup_pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="facelink-dedup")
        store = cfg.dedup_store or (cfg.gallery if is_postgres_url(cfg.gallery) else path_beside(cfg.gallery))
        if is_postgres_url(store):  # the replicas' shared database: a resend to any of them is answered once
            from facelink.cloud.serving.dedup_postgres import PostgresDedupStore

            self.dedup = Deduplicator(PostgresDedupStore(store, cfg.dedup_max_age_s, cfg.dedup_max_entries))
        else:
            self.dedup = Deduplicator(DedupStore(store, cfg.dedup_max_age_s, cfg.dedup_max_entries))
        self.budget = limits.PixelBudget(max(cfg.decode_pixel_budget, cfg.max_pixels))
        self.synth_batcher = self.embed_batcher = None
        if cfg.batching:
            wait = cfg.batch_wait_ms / 1e3
            self.synth_batcher = MicroBatcher(self._synthesize_batch, cfg.batch_max, wait, "synthesis",
                                              lambda n: self._observe_batch("synthesis", n))
            self.embed_batcher = MicroBatcher(self._embed_batch, cfg.batch_max, wait, "embed",
                                              lambda n: self._observe_batch("embed", n))
        self.warming_up = False  # while True, the metrics do not count the work (the warm-up's frames)
        self.metrics.watch_gallery(self.gallery.size)
        self.streams = 0
        self.draining = asyncio.Event()
        self.health: health.aio.HealthServicer | None = None
        self._status = None

    # -- checks ----------------------------------------------------------------------------------------------------
    def _check_request(self, req: pb.RecognizeRequest) -> None:
        limits.check_text(req.id, "request id", MAX_LABEL)
        limits.check_text(req.source, "source", MAX_LABEL)
        if req.top_k > MAX_TOP_K:
            raise limits.InvalidArgument(f"top_k {req.top_k} is over the server's limit of {MAX_TOP_K}")
        if len(req.bitstream) > self.cfg.max_frame_bytes:
            raise limits.FrameTooLargeError(f"frame of {len(req.bitstream)} bytes exceeds the server's limit of "
                                            f"{self.cfg.max_frame_bytes}")

    def _latents(self, data: bytes):
        """Header checks and entropy decoding (a worker thread); a large frame keeps its share of the pixel budget
        until its synthesis is done (the caller releases ``held``)."""
        if len(data) > self.cfg.max_frame_bytes:
            raise limits.FrameTooLargeError(f"frame of {len(data)} bytes exceeds the server's limit of "
                                            f"{self.cfg.max_frame_bytes}")
        frame = bitstream.unpack(data)
        held = self.budget.acquire(limits.check_frame(frame, self.cfg.max_pixels))
        try:
            frame, bundle, y_hat = self.decoder.latents(data)
        except BaseException:
            self.budget.release(held)
            raise
        return frame, bundle, y_hat, held

    def _decode(self, data: bytes):
        """The whole decode in this thread (the per-frame path, Enroll's containers)."""
        frame, bundle, y_hat, held = self._latents(data)
        try:
            image, weights = self._synthesize(frame, y_hat)
        finally:
            self.budget.release(held)
        return image[: frame.height, : frame.width], frame, weights

    # -- answers ---------------------------------------------------------------------------------------------------
    def _base(self, req: pb.RecognizeRequest) -> pb.RecognizeResponse:
        return pb.RecognizeResponse(id=req.id[:MAX_LABEL], source=req.source[:MAX_LABEL])

    def _result(self, req, image, frame, weights, ident: Identification, t0, t1, t2) -> pb.RecognizeResponse:
        h, w = image.shape[:2]
        n = len(req.bitstream)
        # built in place, no message copied (Recognition(...) then CopyFrom copied every frame's answer)
        return pb.RecognizeResponse(id=req.id[:MAX_LABEL], source=req.source[:MAX_LABEL], result=dict(
            face_found=ident.face_found, identity=ident.identity, similarity=ident.similarity,
            matches=[dict(identity=m.identity, similarity=m.similarity) for m in ident.matches],
            width=w, height=h, bytes=n, bpp=8.0 * n / (w * h), model_id=frame.model_id,
            decode_ms=(t1 - t0) * 1e3, recognize_ms=(t2 - t1) * 1e3,
            domain_weights=[dict(domain=d, weight=v) for d, v in (weights or {}).items()]))

    def _error(self, req: pb.RecognizeRequest, e: BaseException) -> pb.RecognizeResponse:
        if isinstance(e, limits.FrameTooLargeError):
            code = pb.Error.FRAME_TOO_LARGE
        elif isinstance(e, limits.InvalidArgument):
            code = pb.Error.INVALID_ARGUMENT
        elif isinstance(e, codec.ModelMismatchError):
            code = pb.Error.UNKNOWN_MODEL
        elif isinstance(e, (bitstream.BitstreamError, ValueError)):
            code = pb.Error.INVALID_BITSTREAM
        else:
            log.error("frame %r failed: %s: %s", req.id[:40], type(e).__name__, e, exc_info=e)
            code, e = pb.Error.INTERNAL, f"internal error: {type(e).__name__}: {e}"
        resp = self._base(req)
        resp.error.CopyFrom(pb.Error(code=code, message=_short(str(e))))
        return resp

    def _recognize(self, req: pb.RecognizeRequest) -> pb.RecognizeResponse:
        """The per-frame path (``batching: false``), in a worker thread."""
        try:
            self._check_request(req)
            t0 = time.perf_counter()
            image, frame, weights = self._decode(req.bitstream)
            t1 = time.perf_counter()
            ident = self.pipeline.identify(image, frame.template_id, req.top_k or self.cfg.top_k)
            return self._result(req, image, frame, weights, ident, t0, t1, time.perf_counter())
        except Exception as e:  # noqa: BLE001 - one frame's failure must not end the stream
            return self._error(req, e)

    # -- the batched path --------------------------------------------------------------------------------------
    def _decode_or_latents(self, data: bytes):
        """(frame, ŷ, None) for a small frame, whose synthesis is batched; (frame, None, (image, weights)) for a large
        one, synthesised here, alone, while it holds its share of the pixel budget (released in this call, whatever
        becomes of the caller)."""
        frame, bundle, y_hat, held = self._latents(data)
        if not held:
            return frame, y_hat, None
        try:
            return frame, None, self._synthesize(frame, y_hat)
        finally:
            self.budget.release(held)

    def _synthesize(self, frame, y_hat):
        synthesis = self.decoder.synthesis(frame.model_id)
        with self.synth_lock:
            return synthesis(y_hat, None, frame.quality)

    def _synthesize_batch(self, key, items):
        synthesis = self.decoder.synthesis(key[0])
        with self.synth_lock:
            return synthesis.batch([y for y, _ in items], [q for _, q in items])

    def _embed_batch(self, key, items):
        """Embeddings of (crop, top_k, t0) items in one recognizer call, then each one's gallery match here (no
        further hop through the worker pool): an :class:`Identification`, or the exception its match raised."""
        embeddings = self.pipeline.embed_crops(np.stack([crop for crop, _, _ in items]))
        out = []
        for emb, (_, top_k, t0) in zip(embeddings, items):
            try:
                out.append(self.pipeline.identify_embedding(emb, top_k, t0))
            except Exception as e:  # noqa: BLE001 - that frame's failure, answered in-band
                out.append(e)
        return out

    def _landmarks_crop(self, image, template_id):
        pts = self.pipeline.landmarks(image, template_id)
        return None if pts is None else self.pipeline.crop(image, pts)

    # A frame of the batched path goes pool (header checks, entropy decoding) → synthesis batcher → [pool: detection,
    # for a whole image] → embed batcher, each stage handing the frame to the next from its own thread (a done
    # callback), and only the last wakes the event loop: one hop through the loop per frame instead of three. An
    # aligned crop's warp to the template (no detector) runs where its synthesis ended. ``out`` resolves to
    # (image, frame, domain weights, identification, t1) or the frame's exception; once it is cancelled (its stream
    # ended) no later stage starts.
    @staticmethod
    def _settle(out: concurrent.futures.Future, result=None, exc: BaseException | None = None) -> None:
        try:
            if exc is not None:
                out.set_exception(exc)
            else:
                out.set_result(result)
        except concurrent.futures.InvalidStateError:  # cancelled meanwhile: nobody waits for it
            pass

    def _chain_decode(self, data: bytes, top_k: int, out: concurrent.futures.Future) -> None:
        """In the worker pool: decode to ŷ (or the whole image, for a large frame), then on to the synthesis."""
        try:
            if out.cancelled():
                return
            frame, y_hat, done = self._decode_or_latents(data)
            if done is not None:
                self._chain_image(frame, done, top_k, out)
                return
            fut = self.synth_batcher.submit((frame.model_id, y_hat.shape), (y_hat, frame.quality))
            fut.add_done_callback(lambda f: self._chain_synthesized(frame, f, top_k, out))
        except BaseException as e:  # noqa: BLE001 - answered in-band by the awaiting coroutine
            self._settle(out, exc=e)

    def _chain_synthesized(self, frame, fut: concurrent.futures.Future, top_k: int,
                           out: concurrent.futures.Future) -> None:
        try:
            self._chain_image(frame, fut.result(), top_k, out)
        except BaseException as e:  # noqa: BLE001
            self._settle(out, exc=e)

    def _chain_image(self, frame, done, top_k: int, out: concurrent.futures.Future) -> None:
        """The synthesised image: its crop (a warp here, or detection in the pool), then the embed batcher."""
        if out.cancelled():
            return
        image, weights = done
        image = image[: frame.height, : frame.width]
        t1 = time.perf_counter()
        if frame.template_id:
            self._chain_embed(image, frame, weights, self._landmarks_crop(image, frame.template_id), top_k, t1, out)
        else:
            def detect():
                try:
                    self._chain_embed(image, frame, weights, self._landmarks_crop(image, 0), top_k, t1, out)
                except BaseException as e:  # noqa: BLE001
                    self._settle(out, exc=e)

            self.pool.submit(detect)

    def _chain_embed(self, image, frame, weights, crop, top_k: int, t1: float, out: concurrent.futures.Future) -> None:
        if crop is None:
            self._settle(out, (image, frame, weights, Identification(False), t1))
            return
        if out.cancelled():
            return

        def embedded(f: concurrent.futures.Future) -> None:
            try:
                ident = f.result()
            except BaseException as e:  # noqa: BLE001
                self._settle(out, exc=e)
                return
            if isinstance(ident, Exception):
                self._settle(out, exc=ident)
            else:
                self._settle(out, (image, frame, weights, ident, t1))

        self.embed_batcher.submit(crop.shape, (crop, top_k, t1)).add_done_callback(embedded)

    async def _recognize_batched(self, req: pb.RecognizeRequest) -> pb.RecognizeResponse:
        try:
            self._check_request(req)
            t0 = time.perf_counter()
            out: concurrent.futures.Future = concurrent.futures.Future()
            self.pool.submit(self._chain_decode, req.bitstream, req.top_k or self.cfg.top_k, out)
            image, frame, weights, ident, t1 = await asyncio.wrap_future(out)
            return self._result(req, image, frame, weights, ident, t0, t1, time.perf_counter())
        except Exception as e:  # noqa: BLE001 - one frame's failure must not end the stream
            return self._error(req, e)

    async def _answer(self, req: pb.RecognizeRequest) -> pb.RecognizeResponse:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        self.metrics.in_flight.inc()
        self.metrics.bytes_in.inc(len(req.bitstream))
        try:
            if req.device_id:  # an edge outbox's frame: answered once per (device id, sequence), repeats replayed
                if self.cfg.batching:
                    def recognize(r):
                        return asyncio.run_coroutine_threadsafe(self._recognize_batched(r), loop).result()
                else:
                    recognize = self._recognize
                try:
                    resp = await loop.run_in_executor(self.dedup_pool, self.dedup.answer, req, recognize)
                except (GalleryUnavailable, DedupError) as e:  # the store is unreachable: the edge sends it again
                    log.error("de-duplication store: %s", e)
                    resp = self._base(req)
                    resp.error.CopyFrom(pb.Error(code=pb.Error.INTERNAL,
                                                 message=_short(f"the de-duplication store is unavailable: {e}")))
            elif self.cfg.batching:
                resp = await self._recognize_batched(req)
            else:
                resp = await loop.run_in_executor(self.pool, self._recognize, req)
        finally:
            self.metrics.in_flight.dec()
        outcome = resp.WhichOneof("outcome") or "none"
        code = "OK" if outcome == "result" else pb.Error.Code.Name(resp.error.code)
        self.metrics.frame_answered(outcome, code, time.perf_counter() - t0)
        if outcome == "result" and not resp.replayed:
            self.metrics.decode_seconds.observe(resp.result.decode_ms / 1e3)
            self.metrics.recognize_seconds.observe(resp.result.recognize_ms / 1e3)
        return resp

    # -- warm-up (:mod:`.warmup`) --------------------------------------------------------------------------------
    def _observe_batch(self, stage: str, n: int) -> None:
        if not self.warming_up:
            self.metrics.batch_size.labels(stage).observe(n)

    def default_bundle(self):
        """The bundle of the model edges are told to use, or the first one loaded when the server has not got it."""
        name = self.cfg.default_model or DEFAULT_MODEL
        bundles = list(self.decoder.bundles.values())
        return next((b for b in bundles if b.name == name), bundles[0])

    async def warmup_recognize(self, req: pb.RecognizeRequest) -> None:
        """One warm-up frame through the path a client's frame takes (batched or per frame), outside the metrics;
        an in-band error is raised: the server would answer a client's frame so."""
        if self.cfg.batching:
            resp = await self._recognize_batched(req)
        else:
            resp = await asyncio.get_running_loop().run_in_executor(self.pool, self._recognize, req)
        if resp.WhichOneof("outcome") != "result":
            raise RuntimeError(f"warm-up frame refused: {pb.Error.Code.Name(resp.error.code)}: {resp.error.message}")

    # -- Enroll ------------------------------------------------------------------------------------------------
    def _image_from_bytes(self, data: bytes) -> tuple[np.ndarray, int]:
        if data[:3] == bitstream.MAGIC:
            image, frame, _ = self._decode(data)
            return image, frame.template_id
        if len(data) > self.cfg.max_image_bytes:
            raise limits.FrameTooLargeError(f"image file of {len(data)} bytes exceeds the server's limit of "
                                            f"{self.cfg.max_image_bytes}")
        try:
            info = image_header.check_image(data, self.cfg.max_image_pixels)
        except image_header.ImageTooLarge as e:
            raise limits.FrameTooLargeError(str(e)) from None
        except image_header.ImageHeaderError as e:
            raise limits.InvalidArgument(f"the image could not be read: {e}") from None
        flag, scale = cv2.IMREAD_COLOR, 1
        if info.format == "jpeg" and info.pixels > self.cfg.max_pixels:  # libjpeg decodes at 1/2, 1/4, 1/8 for free
            scale = next((k for k in (2, 4) if info.pixels <= self.cfg.max_pixels * k * k), 8)
            flag = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}[scale]
        with self.budget.hold(info.pixels // (scale * scale)):
            try:
                im = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
            except cv2.error as e:
                raise limits.InvalidArgument(f"the image could not be decoded ({str(e).strip().splitlines()[-1]})"
                                             ) from None
        if im is None or im.ndim != 3:
            raise limits.InvalidArgument(f"the {info.format} image could not be decoded")
        want = sorted((-(-info.width // scale), -(-info.height // scale)))
        if abs(sorted(im.shape[:2])[0] - want[0]) > 1 or abs(sorted(im.shape[:2])[1] - want[1]) > 1:
            raise limits.InvalidArgument(f"the {info.format} header says {info.width}×{info.height}, the image "
                                         f"decodes to {im.shape[1]}×{im.shape[0]}")
        if im.shape[0] * im.shape[1] > self.cfg.max_pixels:  # detection runs on at most max_pixels
            f = (self.cfg.max_pixels / (im.shape[0] * im.shape[1])) ** 0.5
            im = cv2.resize(im, (max(1, int(im.shape[1] * f)), max(1, int(im.shape[0] * f))),
                            interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(im, cv2.COLOR_BGR2RGB), 0

    def _enroll(self, req: pb.EnrollRequest, enrolled_by: str) -> pb.EnrollResponse:
        name = limits.check_identity_name(req.identity)
        limits.check_text(req.source_name, "source_name", MAX_LABEL)
        data = req.bitstream if req.WhichOneof("source") == "bitstream" else req.image
        if not data:
            raise limits.InvalidArgument("enrollment needs a bitstream or an image")
        image, template_id = self._image_from_bytes(data)
        emb = self.pipeline.embed(image, template_id)
        if emb is None:
            raise LookupError("no face found in the enrollment image")
        n = self.gallery.enroll(name, emb, req.source_name, enrolled_by=enrolled_by)
        return pb.EnrollResponse(identity=name, samples=n, recognizer=self.gallery.recognizer)

    # -- RPCs ----------------------------------------------------------------------------------------------------
    async def Recognize(self, request_iterator, context):
        if self.draining.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; use another replica")
        if self.streams >= self.cfg.max_streams:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"the server is at its limit of {self.cfg.max_streams} concurrent streams")
        self.streams += 1
        self.metrics.streams.inc()
        window = asyncio.Semaphore(max(1, self.cfg.stream_window))
        answers: asyncio.Queue = asyncio.Queue()
        drained = False

        async def read():
            nonlocal drained
            frames = request_iterator.__aiter__()
            drain = asyncio.ensure_future(self.draining.wait())
            nxt = None
            try:
                while True:
                    await window.acquire()  # back-pressure: not read past the window
                    nxt = asyncio.ensure_future(frames.__anext__())
                    await asyncio.wait({nxt, drain}, return_when=asyncio.FIRST_COMPLETED)
                    if not nxt.done():  # shutting down: read nothing more
                        nxt.cancel()
                        drained = True
                        break
                    try:
                        req = nxt.result()
                    except StopAsyncIteration:
                        break
                    await answers.put(asyncio.ensure_future(self._answer(req)))
            finally:
                drain.cancel()
                if nxt is not None and not nxt.cancel() and not nxt.cancelled():
                    nxt.exception()  # retrieved: the end of a cancelled stream is no error worth logging
                await answers.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (task := await answers.get()) is not None:
                resp = await task
                yield resp
                window.release()
            await reader
            if drained:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down: frames after the last "
                                    "answer were not read; resend them to another replica")
        finally:
            reader.cancel()
            while not answers.empty():
                task = answers.get_nowait()
                if task is not None:
                    task.cancel()
            self.streams -= 1
            self.metrics.streams.dec()

    async def _abort(self, context, code: grpc.StatusCode, message: str):
        await context.abort(code, _short(message))

    async def Enroll(self, request, context):
        principal = authmod.principal_of(self.tokens, context.invocation_metadata())
        enrolled_by = principal.name if principal else ""
        loop = asyncio.get_running_loop()
        try:
            resp = await loop.run_in_executor(self.pool, self._enroll, request, enrolled_by)
        except limits.FrameTooLargeError as e:
            code, message = grpc.StatusCode.RESOURCE_EXHAUSTED, str(e)
        except LookupError as e:
            code, message = grpc.StatusCode.FAILED_PRECONDITION, str(e)
        except GalleryUnavailable as e:
            code, message = grpc.StatusCode.UNAVAILABLE, str(e)
        except (GalleryError, bitstream.BitstreamError, ValueError) as e:  # limits.InvalidArgument is a ValueError
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(e)
        else:
            self.metrics.enrollments.labels("ok").inc()
            return resp
        self.metrics.enrollments.labels(code.name).inc()
        await self._abort(context, code, message)

    async def _gallery_call(self, context, fn, *args):
        """A gallery call off the event loop, its refusals as status codes."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        except NotFoundError as e:
            await self._abort(context, grpc.StatusCode.NOT_FOUND, str(e))
        except GalleryError as e:
            await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except GalleryUnavailable as e:
            await self._abort(context, grpc.StatusCode.UNAVAILABLE, str(e))

    async def ListIdentities(self, request, context):
        records = await self._gallery_call(context, self.gallery.records, request.all_recognizers)
        mine = self.gallery.recognizer
        return pb.ListIdentitiesResponse(identities=[pb.Identity(
            name=r.name, samples=sum(s.recognizer == mine for s in r.samples), created_at=r.created_at,
            sample_records=[pb.Sample(id=s.id, recognizer=s.recognizer, enrolled_at=s.enrolled_at,
                                      enrolled_by=s.enrolled_by, source_name=s.source) for s in r.samples])
            for r in records], recognizer=mine)

    async def DeleteIdentity(self, request, context):
        d = await self._gallery_call(context, self.gallery.delete_identity, request.identity)
        log.info("identity erased (%d samples)", d.samples_removed)
        return pb.DeleteIdentityResponse(identity=d.identity, samples_removed=d.samples_removed)

    async def RemoveSample(self, request, context):
        r = await self._gallery_call(context, self.gallery.remove_sample, request.identity, request.sample_id)
        log.info("sample %d erased%s", request.sample_id, " with its identity" if r.identity_deleted else "")
        return pb.RemoveSampleResponse(identity=r.identity, samples=r.samples_left, identity_deleted=r.identity_deleted)

    async def GetModelInfo(self, request, context):
        return pb.ModelInfoResponse(
            server_version=SERVER_VERSION, bitstream_format_version=max(bitstream.READABLE_VERSIONS),  # newest it reads
            models=[pb.CodecModel(name=b.name, model_id=b.model_id, architecture=b.manifest["architecture"],
                                  domains=self.decoder.domains(b.model_id))
                    for b in self.decoder.bundles.values()],
            default_model=self.cfg.default_model or DEFAULT_MODEL, recognizer=self.gallery.recognizer, detector="yunet",
            match_threshold=self.cfg.threshold, max_frame_bytes=self.cfg.max_frame_bytes,
            crop_template_ids=sorted(TEMPLATE_IDS))

    # -- readiness and shutdown ----------------------------------------------------------------------------------
    def _gallery_ok(self) -> bool:
        try:
            self.gallery.check()
            return True
        except Exception as e:  # noqa: BLE001 - any failure means not ready
            log.warning("gallery not reachable: %s", e)
            return False

    async def update_health(self) -> None:
        """SERVING while the models are loaded (they are, once this object exists) and the gallery answers."""
        ok = not self.draining.is_set() and await asyncio.get_running_loop().run_in_executor(self.pool,
                                                                                             self._gallery_ok)
        status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
        if status != self._status and self.health is not None:
            self._status = status
            for name in ("", SERVICE_NAME):
                await self.health.set(name, status)

    async def watch_health(self) -> None:
        while not self.draining.is_set():
            await asyncio.sleep(self.cfg.health_interval_s)
            await self.update_health()

    def close(self) -> None:
        for b in (self.synth_batcher, self.embed_batcher):
            if b is not None:
                b.close()
        self.pool.shutdown(wait=True)
        self.dedup_pool.shutdown(wait=True)
        self.gallery.close()
        self.dedup.store.close()


class LoggingInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation, handler_call_details):
        log.info("call %s", handler_call_details.method)
        return await continuation(handler_call_details)


async def start(cfg: ServerConfig) -> tuple[grpc.aio.Server, int, FaceLinkService]:
    """Build and start a server (raises :class:`ServeRefused` when unsafe or its port is taken). The port is bound
    before the models load, so a second server on a port in use is refused at once."""
    for warning in check_exposure(cfg):
        log.warning(warning)
    tokens = authmod.TokenStore(cfg.auth_tokens) if cfg.auth_tokens else None
    creds = server_credentials(cfg)
    metrics = Metrics()
    interceptors = [LoggingInterceptor()]
    if tokens is not None:
        interceptors.insert(0, authmod.AuthInterceptor(tokens, lambda code: metrics.denied.labels(code).inc()))
    server = grpc.aio.server(
        interceptors=interceptors, maximum_concurrent_rpcs=cfg.max_streams + 64,
        options=[("grpc.max_receive_message_length", cfg.max_message_bytes),
                 ("grpc.max_send_message_length", cfg.max_message_bytes),
                 ("grpc.so_reuseport", 0), *GRPC_TRANSPORT_OPTIONS])
    address = f"[{cfg.host}]:{cfg.port}" if ":" in cfg.host else f"{cfg.host}:{cfg.port}"
    try:
        port = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        raise ServeRefused(f"cannot bind {address}: the port is in use (facelink never shares a port) or the "
                           "address is not this machine's")
    service = FaceLinkService(cfg, tokens, metrics)
    pb_grpc.add_FaceLinkServicer_to_server(service, server)
    service.health = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(service.health, server)
    reflection.enable_server_reflection((SERVICE_NAME, HEALTH_NAME, reflection.SERVICE_NAME), server)
    for name in ("", SERVICE_NAME):
        await service.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    if cfg.warmup:  # health says NOT_SERVING meanwhile
        service.warming_up = True
        try:
            log.info("warm-up: %s", json.dumps(await warmup.warm_up(service, cfg.max_streams)))
        finally:
            service.warming_up = False
    await service.update_health()
    return server, port, service


async def shutdown(server: grpc.aio.Server, service: FaceLinkService, grace: float) -> None:
    """NOT_SERVING, no new streams, frames in flight answered (within ``grace``), then stop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    service.draining.set()
    await service.update_health()
    while service.streams and loop.time() < deadline:
        await asyncio.sleep(0.02)
    await server.stop(max(0.0, deadline - loop.time()))
    await loop.run_in_executor(None, service.close)


async def _serve(cfg: ServerConfig, ready_file: Path | None) -> None:
    server, port, service = await start(cfg)
    info = {"host": cfg.host, "port": port, "models": [b.name for b in service.decoder.bundles.values()],
            "recognizer": cfg.recognizer, "gallery": service.gallery.describe(), "version": SERVER_VERSION,
            "tls": bool(cfg.tls_cert), "mtls": bool(cfg.client_ca), "auth": bool(cfg.auth_tokens)}
    if cfg.metrics_port is not None:
        _, info["metrics_port"] = service.metrics.serve(cfg.metrics_port, cfg.metrics_host)
    print(json.dumps({"event": "serving", **info}), flush=True)
    if ready_file:
        tmp = ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(ready_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if service.tokens is not None:
        def reload():
            try:
                log.warning("token file re-read: %d tokens", service.tokens.reload())
            except authmod.TokenFileError as e:
                log.error("token file not re-read, the old tokens stay: %s", e)
        loop.add_signal_handler(signal.SIGHUP, reload)
    watcher = asyncio.ensure_future(service.watch_health())
    await stop.wait()
    print(json.dumps({"event": "stopping", "streams": service.streams}), flush=True)
    watcher.cancel()
    await shutdown(server, service, cfg.shutdown_grace_s)
    print(json.dumps({"event": "stopped"}), flush=True)


def run(cfg: ServerConfig, ready_file: Path | None = None) -> None:
    """Serve until SIGTERM or SIGINT (then drain and stop); raises what refuses the start."""
    asyncio.run(_serve(cfg, ready_file))


def main(argv: list[str] | None = None) -> int:
    """``facelink serve`` (:mod:`.serve_command`, which checks options and the port before this module loads)."""
    from facelink.cloud.serving.serve_command import main as serve_main

    return serve_main(argv)

if __name__ == "__main__":
    raise SystemExit(main())
