"""How long gRPC itself takes to refuse a message over a server's receive limit, with no facelink code on the path.

  python -m facelink.benchmarks.grpc_refusal [--calls 10] [--limit 1024] [--out benchmarks/results/grpc_refusal.json]

The control for ``facelink bench attacks``' rows that gRPC refuses (a frame or an Enroll over
``--max-message-bytes``): a bare gRPC server on loopback with one unary method that returns at once, its
``grpc.max_receive_message_length`` at ``--limit`` bytes, each server kind (``grpc.aio`` as ``facelink serve`` uses,
and the thread-pool server) in turn. Per kind, ``--calls`` calls of each case, one at a time, client-observed time:

- ``under_limit``: a message of half the limit (served);
- ``over_limit``: a message of twice the limit (RESOURCE_EXHAUSTED from the server's transport);
- ``client_send_limit``: the same message from a channel whose ``grpc.max_send_message_length`` is the limit
  (refused by the client before anything is sent).

Reports each case's status code and milliseconds (min, median, max). The server refuses in the transport, before any
handler or interceptor runs, so no server code can answer sooner.
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

METHOD = "/control.Echo/Call"
CASES = ("under_limit", "over_limit", "client_send_limit")


def _handlers() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        "control.Echo", {"Call": grpc.unary_unary_rpc_method_handler(lambda request, context: b"ok")})


def _calls(port: int, limit: int, calls: int) -> dict:
    """Client-observed time of each case, ``calls`` times, from a synchronous client."""
    results: dict = {}
    with grpc.insecure_channel(f"127.0.0.1:{port}") as plain, grpc.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", limit)]) as capped:
        grpc.channel_ready_future(plain).result(timeout=10)
        grpc.channel_ready_future(capped).result(timeout=10)
        for case in CASES:
            channel = capped if case == "client_send_limit" else plain
            payload = b"x" * (limit // 2 if case == "under_limit" else 2 * limit)
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
            results[case] = {"bytes": len(payload), "codes": sorted(codes), "ms_min": round(min(ms), 1),
                             "ms_median": round(statistics.median(ms), 1), "ms_max": round(max(ms), 1)}
    return results


def _thread_server(limit: int, calls: int) -> dict:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                         options=[("grpc.max_receive_message_length", limit)])
    server.add_generic_rpc_handlers((_handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        return _calls(port, limit, calls)
    finally:
        server.stop(0)


def _aio_server(limit: int, calls: int) -> dict:
    """The aio server runs its own event loop in a thread; the client calls it from this one."""
    ready, done = threading.Event(), threading.Event()
    state: dict = {}

    async def serve() -> None:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit)])
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
        return _calls(state["port"], limit, calls)
    finally:
        done.set()
        thread.join(30)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m facelink.benchmarks.grpc_refusal", description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=10, help="calls per case and server kind (default 10)")
    ap.add_argument("--limit", type=int, default=1024, help="the server's receive limit in bytes (default 1024)")
    ap.add_argument("--out", type=Path, help="write the result JSON here as well")
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    if args.calls < 1 or args.limit < 2:
        ap.error("--calls must be at least 1 and --limit at least 2")
    doc = {"command": " ".join(["python -m facelink.benchmarks.grpc_refusal", *argv]),
           "grpc_version": grpc.__version__, "limit_bytes": args.limit, "calls": args.calls,
           "servers": {"aio": _aio_server(args.limit, args.calls), "thread_pool": _thread_server(args.limit,
                                                                                                 args.calls)}}
    emit_json(stamp(doc), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
