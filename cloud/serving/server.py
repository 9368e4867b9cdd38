"""The facelink cloud server: grpc.aio, with health checking, reflection and a logging interceptor.

Per frame: container → decode (exact entropy decoding, torch synthesis) → detect/align → recognizer → gallery
match. A bad frame is answered in-band with an :class:`Error` carrying its request id, and the stream goes on.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from facelink.shared import config as cfgmod
from facelink.cloud.serving.decoder import CloudDecoder
from facelink.cloud.serving.dedup import DedupError, Deduplicator, DedupStore, path_beside
from facelink.cloud.serving.gallery import Gallery, GalleryError, GalleryUnavailable, NotFoundError
from facelink.cloud.serving.recognition import DEFAULT_THRESHOLD, FacePipeline
from facelink.cloud.serving.recognizers import get_recognizer
from facelink.shared import bitstream, codec, registry
from facelink.shared.alignment import TEMPLATE_IDS
from facelink.shared.registry import DEFAULT_MODEL
from facelink.v1 import facelink_pb2 as pb
from facelink.v1 import facelink_pb2_grpc as pb_grpc

log = logging.getLogger("facelink.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FaceLink"].full_name
SERVER_VERSION = "0.1.0"


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    gallery: str = "facelink-gallery.db"
    recognizer: str = "mobilefacenet"
    models: list[str] | None = None  # default: every model in the registry
    default_model: str = DEFAULT_MODEL
    threshold: float = DEFAULT_THRESHOLD
    top_k: int = 3
    max_frame_bytes: int = 1 << 20
    max_pixels: int = 4096 * 4096
    workers: int = 2
    device: str | None = None
    # Decode with a rate point's face-domain adapters where its bundle has them (false: the base decoder).
    adapters: bool = True
    # Exactly-once delivery: answers kept per (device id, sequence) beside the gallery, by age and count.
    dedup_max_age_s: float = 7 * 86400.0
    dedup_max_entries: int = 1_000_000


class FrameRejected(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class FaceLinkService(pb_grpc.FaceLinkServicer):
    def __init__(self, cfg: ServerConfig):
        self.cfg = cfg
        self.decoder = CloudDecoder(cfg.models, device=cfg.device, adapters="on" if cfg.adapters else "off")
        recognizer = get_recognizer(cfg.recognizer, cfg.device)
        self.gallery = Gallery(cfg.gallery, recognizer.name)
        self.pipeline = FacePipeline(recognizer, self.gallery, threshold=cfg.threshold)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="facelink")
        self.dedup = Deduplicator(DedupStore(path_beside(cfg.gallery), cfg.dedup_max_age_s, cfg.dedup_max_entries))

    # -- frame work (runs in the thread pool) ------------------------------------------------------------------
    def _decode(self, data: bytes):
        if len(data) > self.cfg.max_frame_bytes:
            raise FrameRejected(pb.Error.FRAME_TOO_LARGE,
                                f"frame of {len(data)} bytes exceeds the server's limit of {self.cfg.max_frame_bytes}")
        frame = bitstream.unpack(data)
        ph, pw = frame.padded_shape
        if ph * pw > self.cfg.max_pixels:
            raise FrameRejected(pb.Error.FRAME_TOO_LARGE,
                                f"image of {frame.width}×{frame.height} exceeds the server's limit of "
                                f"{self.cfg.max_pixels} pixels")
        return self.decoder.decode(data)

    def _recognize(self, req: pb.RecognizeRequest) -> pb.RecognizeResponse:
        resp = pb.RecognizeResponse(id=req.id, source=req.source)
        try:
            t0 = time.perf_counter()
            dec = self._decode(req.bitstream)
            t1 = time.perf_counter()
            ident = self.pipeline.identify(dec.image, dec.frame.template_id, req.top_k or self.cfg.top_k)
            h, w = dec.image.shape[:2]
            resp.result.CopyFrom(pb.Recognition(
                face_found=ident.face_found, identity=ident.identity, similarity=ident.similarity,
                matches=[pb.Match(identity=m.identity, similarity=m.similarity) for m in ident.matches],
                width=w, height=h, bytes=len(req.bitstream), bpp=8.0 * len(req.bitstream) / (w * h),
                model_id=dec.frame.model_id, decode_ms=(t1 - t0) * 1e3,
                recognize_ms=(time.perf_counter() - t1) * 1e3,
                domain_weights=[pb.DomainWeight(domain=d, weight=v) for d, v in (dec.domain_weights or {}).items()]))
        except FrameRejected as e:
            resp.error.CopyFrom(pb.Error(code=e.code, message=str(e)))
        except codec.ModelMismatchError as e:
            resp.error.CopyFrom(pb.Error(code=pb.Error.UNKNOWN_MODEL, message=str(e)))
        except (bitstream.BitstreamError, ValueError) as e:
            resp.error.CopyFrom(pb.Error(code=pb.Error.INVALID_BITSTREAM, message=str(e)))
        except Exception as e:  # noqa: BLE001 - one frame's failure must not end the stream
            log.exception("frame %s failed", req.id)
            resp.error.CopyFrom(pb.Error(code=pb.Error.INTERNAL, message=f"internal error: {type(e).__name__}: {e}"))
        return resp

    def _image_from_bytes(self, data: bytes) -> tuple[np.ndarray, int]:
        if data[:3] == bitstream.MAGIC:
            dec = self._decode(data)
            return dec.image, dec.frame.template_id
        if len(data) > self.cfg.max_frame_bytes * 16:
            raise FrameRejected(pb.Error.FRAME_TOO_LARGE, f"image file of {len(data)} bytes is too large")
        im = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if im is None:
            raise ValueError("the image could not be decoded (not a JPEG/PNG/WebP/... file)")
        if im.shape[0] * im.shape[1] > self.cfg.max_pixels:
            raise FrameRejected(pb.Error.FRAME_TOO_LARGE, f"image of {im.shape[1]}×{im.shape[0]} is too large")
        return cv2.cvtColor(im, cv2.COLOR_BGR2RGB), 0

    def _enroll(self, req: pb.EnrollRequest) -> pb.EnrollResponse:
        data = req.bitstream if req.WhichOneof("source") == "bitstream" else req.image
        if not data:
            raise ValueError("enrollment needs a bitstream or an image")
        image, template_id = self._image_from_bytes(data)
        emb = self.pipeline.embed(image, template_id)
        if emb is None:
            raise LookupError("no face found in the enrollment image")
        n = self.gallery.enroll(req.identity, emb, req.source_name)
        return pb.EnrollResponse(identity=req.identity.strip(), samples=n, recognizer=self.gallery.recognizer)

    # -- RPCs ----------------------------------------------------------------------------------------------------
    async def Recognize(self, request_iterator, context):
        loop = asyncio.get_running_loop()
        async for req in request_iterator:
            if req.device_id:  # an edge outbox's frame: answered once per (device id, sequence), repeats replayed
                yield await loop.run_in_executor(self.pool, self.dedup.answer, req, self._recognize)
            else:
                yield await loop.run_in_executor(self.pool, self._recognize, req)

    async def Enroll(self, request, context):
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.pool, self._enroll, request)
        except FrameRejected as e:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        except LookupError as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except (GalleryError, bitstream.BitstreamError, ValueError) as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))

    async def _gallery_call(self, context, fn, *args):
        """A gallery call off the event loop, its refusals as status codes."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        except NotFoundError as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        except GalleryError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except GalleryUnavailable as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))

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
            server_version=SERVER_VERSION, bitstream_format_version=bitstream.FORMAT_VERSION,
            models=[pb.CodecModel(name=b.name, model_id=b.model_id, architecture=b.manifest["architecture"],
                                  domains=self.decoder.domains(b.model_id))
                    for b in self.decoder.bundles.values()],
            default_model=self.cfg.default_model, recognizer=self.gallery.recognizer, detector="yunet",
            match_threshold=self.cfg.threshold, max_frame_bytes=self.cfg.max_frame_bytes,
            crop_template_ids=sorted(TEMPLATE_IDS))


class LoggingInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation, handler_call_details):
        log.info("call %s", handler_call_details.method)
        return await continuation(handler_call_details)


async def start(cfg: ServerConfig) -> tuple[grpc.aio.Server, int, FaceLinkService]:
    service = FaceLinkService(cfg)
    # gRPC's own limit sits well above max_frame_bytes so oversize frames get an in-band error, not a dead stream
    limit = max(16 << 20, 4 * cfg.max_frame_bytes)
    server = grpc.aio.server(interceptors=[LoggingInterceptor()],
                             options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", limit)])
    pb_grpc.add_FaceLinkServicer_to_server(service, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(f"{cfg.host}:{cfg.port}")
    if port == 0:
        raise RuntimeError(f"cannot bind {cfg.host}:{cfg.port}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port, service


async def _serve(cfg: ServerConfig, ready_file: Path | None) -> None:
    server, port, service = await start(cfg)
    info = {"host": cfg.host, "port": port, "models": [b.name for b in service.decoder.bundles.values()],
            "recognizer": cfg.recognizer, "gallery": cfg.gallery}
    print(json.dumps({"event": "serving", **info}), flush=True)
    if ready_file:
        tmp = ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(ready_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=2)
    service.gallery.close()
    service.dedup.store.close()
    service.pool.shutdown(wait=False, cancel_futures=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="facelink serve", description="Run the facelink cloud server (gRPC).")
    ap.add_argument("--config", help="YAML/JSON server configuration (unknown keys are errors)")
    ap.add_argument("--host")
    ap.add_argument("--port", type=int, help="0 picks a free port (printed, and written to --ready-file)")
    ap.add_argument("--gallery", help="SQLite gallery file (created if absent)")
    ap.add_argument("--recognizer")
    ap.add_argument("--model", action="append", dest="models", help="codec model to serve (repeatable)")
    ap.add_argument("--threshold", type=float)
    ap.add_argument("--max-frame-bytes", type=int)
    ap.add_argument("--workers", type=int)
    ap.add_argument("--device")
    ap.add_argument("--no-adapters", action="store_true",
                    help="decode with the base decoders, not the rate points' face-domain adapters (to compare)")
    ap.add_argument("--ready-file", type=Path, help="written once the server is serving: JSON with the port")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        data = cfgmod.to_dict(cfgmod.load(ServerConfig, args.config)) if args.config else {}
        for key in ("host", "port", "gallery", "recognizer", "models", "threshold", "max_frame_bytes", "workers",
                    "device"):
            if getattr(args, key) is not None:
                data[key] = getattr(args, key)
        if args.no_adapters:
            data["adapters"] = False
        cfg = cfgmod.from_mapping(ServerConfig, data, "server config")
    except (OSError, cfgmod.ConfigError) as e:
        print(f"facelink serve: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(cfg, args.ready_file))
    except (registry.UnknownModelError, GalleryError, DedupError) as e:
        print(f"facelink serve: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
