"""How long gRPC itself takes to refuse a message over a server's receive limit, with no facelink code on the path,
under gRPC's default transport options and under the ones ``facelink serve`` adds.

  python -m facelink.benchmarks.grpc_refusal [--calls 10] [--limit BYTES] [--large BYTES] [--variants NAME ...]
      [--out benchmarks/results/grpc_refusal.json]

The control for ``facelink bench attacks``' rows that gRPC refuses (a frame or an Enroll over
``--max-message-bytes``): a bare gRPC server on loopback with one unary method that returns at once, its
``grpc.max_receive_message_length`` at ``--limit`` bytes (default: ``facelink serve``'s, 8 MiB + 64 KiB), each server
kind (``grpc.aio`` as ``facelink serve`` uses, and the thread-pool server) in turn, under each variant of the
server's other channel options (:data:`VARIANTS`). Per variant and kind, ``--calls`` calls of each case, one at a
time, client-observed time:

- ``small``: a message of 512 bytes (served);
- ``under_limit``: a message of half the limit (served);
- ``over_limit``: a message 1 KiB over the limit (RESOURCE_EXHAUSTED from the server's transport);
- ``far_over_limit``: a message of ``--large`` bytes (default 17 MiB; RESOURCE_EXHAUSTED);
- ``client_send_limit``: the ``over_limit`` message from a channel whose ``grpc.max_send_message_length`` is the
  limit (refused by the client before anything is sent).

Reports each case's status code and milliseconds (min, median, max). The server refuses in the transport, before any
handler or interceptor runs, so no server code can answer sooner; but under gRPC's defaults the transport holds the
answer back for a random 100-1000 ms (its "tarpit" for calls it ends with an error), which ``grpc.http.tarpit`` = 0
turns off.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc

from facelink.cloud.evaluation.provenance import emit_json, stamp
from facelink.cloud.serving.settings import GRPC_TRANSPORT_OPTIONS, ServerConfig

METHOD = "/control.Echo/Call"
CASES = ("small", "under_limit", "over_limit", "far_over_limit", "client_send_limit")
SMALL = 512
JUST_OVER = 1024
LARGE = 17 << 20

# Server channel options besides the receive limit: gRPC's defaults, the options facelink serve adds, and the other
# transport settings tried against the delay (none of them moves it).
VARIANTS: dict[str, tuple[tuple[str, int], ...]] = {
    "grpc_defaults": (),
    "facelink_serve": GRPC_TRANSPORT_OPTIONS,
    "bdp_probe_off": (("grpc.http2.bdp_probe", 0),),
    "max_frame_size_16k": (("grpc.http2.max_frame_size", 16384),),
    "lookahead_64k": (("grpc.http2.lookahead_bytes", 65536),),
    "one_stream": (("grpc.max_concurrent_streams", 1),),
    "tarpit_0_ms": (("grpc.http.tarpit_min_duration_ms", 0), ("grpc.http.tarpit_max_duration_ms", 0)),
}


def _handlers() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        "control.Echo", {"Call": grpc.unary_unary_rpc_method_handler(lambda request, context: b"ok")})


def _sizes(limit: int, large: int) -> dict[str, int]:
    return {"small": min(SMALL, limit // 2), "under_limit": limit // 2, "over_limit": limit + JUST_OVER,
            "far_over_limit": max(large, limit + JUST_OVER), "client_send_limit": limit + JUST_OVER}


def _calls(port: int, limit: int, large: int, calls: int) -> dict:
    """Client-observed time of each case, ``calls`` times, from a synchronous client."""
    results: dict = {}
    with grpc.insecure_channel(f"127.0.0.1:{port}") as plain, grpc.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", limit)]) as capped:
        grpc.channel_ready_future(plain).result(timeout=10)
        grpc.channel_ready_future(capped).result(timeout=10)
        for case, size in _sizes(limit, large).items():
            channel = capped if case == "client_send_limit" else plain
            payload = b"x" * size
            call = channel.unary_unary(METHOD)
            ms, codes = [], set()
            for _ in range(calls):
                t0 = time.perf_counter()
                try:
                    call(payload, timeout=30)
                    codes.add("OK")
                except grpc.RpcError as e:
                    codes.add(e.code().name)
                ms.append((time.perf_counter() - t0) * 1e3)
            results[case] = {"bytes": size, "codes": sorted(codes), "ms_min": round(min(ms), 1),
                             "ms_median": round(statistics.median(ms), 1), "ms_max": round(max(ms), 1)}
    return results


def _thread_server(options: list, limit: int, large: int, calls: int) -> dict:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=options)
    server.add_generic_rpc_handlers((_handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        return _calls(port, limit, large, calls)
    finally:
        server.stop(0)


def _aio_server(options: list, limit: int, large: int, calls: int) -> dict:
    """The aio server runs its own event loop in a thread; the client calls it from this one."""
    ready, done = threading.Event(), threading.Event()
    state: dict = {}

    async def serve() -> None:
        server = grpc.aio.server(options=options)
        server.add_generic_rpc_handlers((_handlers(),))
        state["port"] = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        ready.set()
        while not done.is_set():
            await asyncio.sleep(0.01)
        await server.stop(0)

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("the aio control server did not start")
    try:
        return _calls(state["port"], limit, large, calls)
    finally:
        done.set()
        thread.join(30)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m facelink.benchmarks.grpc_refusal", description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=10, help="calls per case, server kind and variant (default 10)")
    ap.add_argument("--limit", type=int, default=ServerConfig.max_message_bytes,
                    help="the server's receive limit in bytes (default facelink serve's, %(default)s)")
    ap.add_argument("--large", type=int, default=LARGE, help="far_over_limit's message bytes (default 17 MiB)")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                    help="server option variants to measure (default all)")
    ap.add_argument("--out", type=Path, help="write the result JSON here as well")
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    if args.calls < 1 or args.limit < 2:
        ap.error("--calls must be at least 1 and --limit at least 2")
    variants = {}
    for name in args.variants:
        options = [("grpc.max_receive_message_length", args.limit), *VARIANTS[name]]
        variants[name] = {"server_options": [list(o) for o in VARIANTS[name]],
                          "servers": {"aio": _aio_server(options, args.limit, args.large, args.calls),
                                      "thread_pool": _thread_server(options, args.limit, args.large, args.calls)}}
    doc = {"command": " ".join(["python -m facelink.benchmarks.grpc_refusal", *argv]),
           "grpc_version": grpc.__version__, "limit_bytes": args.limit, "calls": args.calls,
           "sizes": _sizes(args.limit, args.large), "variants": variants}
    emit_json(stamp(doc), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
