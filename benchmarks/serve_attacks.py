"""Hostile requests against a real ``facelink serve`` on loopback: what was sent, the answer, how long it took and
how much memory the server added.

  facelink bench attacks [--out benchmarks/results/serve_attacks.json]

The server runs with its defaults and a token file (an admin and an edge token); the attacks that need a role use
the admin token, so that they reach the limits behind authentication. For each attack: the answer (the in-band
Error code of a frame, or the call's gRPC status), the wall time from sending to the answer, and the server's extra
RSS (its peak resident memory during the attack over its resident memory before; the peak is reset through
/proc/PID/clear_refs before each attack) and the part of it still resident after the answer (kept_rss_mb: glibc keeps
freed memory in the arena of the thread that used it, for reuse). The server's resident memory once it is ready (its
models loaded) is recorded too. Rows whose memory is legal work carry a note that tells it from the attack's.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np

from facelink.cloud.evaluation.provenance import emit_json, stamp
from facelink.shared.registry import DEFAULT_MODEL

DEFAULT_OUT = Path("benchmarks/results/serve_attacks.json")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_of_zeros(side: int) -> bytes:
    """A complete, valid side×side RGB PNG of black pixels (a few MB: zeros compress 1000:1)."""
    z = zlib.compressobj(9)
    row = bytes(1 + 3 * side)
    parts, rows = [], 0
    block = row * 64
    while rows < side:
        n = min(64, side - rows)
        parts.append(z.compress(block if n == 64 else row * n))
        rows += n
    parts.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def jpeg_header(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return b"\xff\xd8" + app0 + b"\xff\xc2" + struct.pack(">HBHHB", 17, 8, height, width, 3) + bytes(9) + b"\xff\xd9"


def container(side: int, payload_bytes: int) -> bytes:
    """A well-formed container (valid CRC, the server's model) declaring side×side pixels, random payload."""
    return bitstream_of(DEFAULT_MODEL, side, side, payload_bytes)


def bitstream_of(model: str, width: int, height: int, payload_bytes: int, seed: int = 0) -> bytes:
    """A well-formed container of ``model`` (valid CRC) declaring width×height pixels, random payload."""
    from facelink.shared import bitstream, registry

    payload = np.random.default_rng(seed).integers(0, 256, payload_bytes // 4 * 4, dtype=np.uint8).tobytes()
    return bitstream.pack(bitstream.Frame(registry.load(model).model_id, height, width, (payload,), 0, 2))


class Server:
    def __init__(self, work: Path, *args: str):
        self.ready = work / "ready.json"
        self.proc = subprocess.Popen([sys.executable, "-m", "facelink.cloud.cli", "serve", "--port", "0", "--model",
                                      DEFAULT_MODEL, "--gallery", str(work / "g.db"), "--ready-file", str(self.ready),
                                      *args], stdout=subprocess.DEVNULL, stderr=open(work / "server.err", "w"))
        t0 = time.time()
        while not self.ready.exists():
            if self.proc.poll() is not None or time.time() - t0 > 300:
                raise RuntimeError((work / "server.err").read_text()[-2000:])
            time.sleep(0.2)
        self.port = json.loads(self.ready.read_text())["port"]
        self.target = f"127.0.0.1:{self.port}"

    def status(self) -> dict[str, int]:
        lines = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in lines) if k in ("VmRSS", "VmHWM")}

    def reset_peak(self) -> None:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


class Note(str):
    """A row's note, last in its attack's tuple: what of its memory is legal work rather than the attack's."""


FIRST_CROP = Note(
    "the crop is the first a client sent: with the server's warm-up (its default) the model's synthesis was built "
    "and the networks' first use paid before SERVING; without it (--no-warmup) this crop builds the synthesis (a "
    "frozen TorchScript copy, traced and checked) and pays that first use, which glibc then keeps for reuse (the next "
    "row: the same crop again); the two containers cost what the row above costs")
LEGAL_FULL_FRAME = Note(
    "legal work, for scale, not an attack: the entropy decoding of the random-payload rows above (what a bad "
    "container at the pixel budget costs before it is refused), then the synthesis of 640x512 pixels, whose "
    "activations (64 channels at 320x256 in float32: 21 MB each) no refused container reaches")
FIRST_BURST = Note(
    "the refused streams cost what the idle-streams row above costs; the rest is the legal work of 64 frames at "
    "once, the first micro-batches of 8 of the synthesis and of the recognizer from clients, on two threads at once "
    "(the warm-up sent two such bursts before SERVING; the next row: the same again)")


def measure(server: Server, attack, *args) -> dict:
    import grpc

    from facelink.v1 import facelink_pb2 as pb

    before = server.status()["VmRSS"]
    server.reset_peak()
    t0 = time.perf_counter()
    try:
        answer = attack(*args)
    except grpc.RpcError as e:
        answer = f"{e.code().name}: {e.details()[:120]}"
    except RuntimeError as e:
        answer = str(e)[:160]
    ms = (time.perf_counter() - t0) * 1e3
    if isinstance(answer, pb.RecognizeResponse):
        answer = ("OK" if answer.WhichOneof("outcome") == "result" else
                  f"in-band {pb.Error.Code.Name(answer.error.code)}: {answer.error.message[:120]}")
    after = server.status()
    return {"answer": answer, "ms": round(ms, 1), "extra_rss_mb": round((after["VmHWM"] - before) / 1024, 1),
            "kept_rss_mb": round((after["VmRSS"] - before) / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="facelink bench attacks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="result JSON (default %(default)s)")
    ap.add_argument("--note", default="", help="how the machine was when this ran (kept in the result)")
    ap.add_argument("--idle-streams", type=int, default=300, help="idle streams opened at once (default 300)")
    ap.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                    help="an option for the server beyond its defaults (repeatable; e.g. --server-arg=--no-warmup)")
    args = ap.parse_args(argv)

    import cv2
    import grpc

    from facelink.cloud.serving import auth
    from facelink.edge.client import Client, request
    from facelink.edge.encoder import EdgePipeline
    from facelink.shared.paths import DEMO_FACES_DIR
    from facelink.v1 import facelink_pb2 as pb

    rgb = cv2.cvtColor(cv2.imread(str(DEMO_FACES_DIR / "probe" / "Colin_Powell_0002.jpg")), cv2.COLOR_BGR2RGB)
    crop = EdgePipeline(DEFAULT_MODEL).process(rgb).data
    photo = (DEMO_FACES_DIR / "enroll" / "Colin_Powell_0001.jpg").read_bytes()
    bomb_4096 = container(4096, 792 << 10)
    at_budget = container(640, 64 << 10)  # 409,600 pixels: over the default budget (640x512 = 327,680)
    within_budget = bitstream_of(DEFAULT_MODEL, 640, 512, 64 << 10)
    other_payloads = [bitstream_of(DEFAULT_MODEL, 640, 512, 64 << 10, seed) for seed in range(1, 9)]
    # legal work, for scale: real full frames coded by the edge (the face photo resized), VGA and the pixel budget
    full_frame = EdgePipeline(DEFAULT_MODEL, full_frame=True)
    vga = full_frame.process(cv2.resize(rgb, (640, 480), interpolation=cv2.INTER_CUBIC)).data
    megapixel = full_frame.process(cv2.resize(rgb, (1024, 1024), interpolation=cv2.INTER_CUBIC)).data
    png30, png40 = png_of_zeros(30000), png_of_zeros(40000)
    rows = []
    with tempfile.TemporaryDirectory(prefix="facelink-attacks-") as tmp:
        work = Path(tmp)
        tokens = work / "tokens.txt"
        admin, edge = auth.add_token(tokens, "admin", "admin"), auth.add_token(tokens, "cam", "edge")
        server = Server(work, "--auth-tokens", str(tokens), *args.server_arg)
        rss_at_start = round(server.status()["VmRSS"] / 1024, 1)
        try:
            c = Client(server.target, timeout=120, token=admin)
            c.enroll("Colin Powell", image=photo)

            def one(data, **kw):
                (r,) = c.recognize_stream([request("x", data, **kw)])
                return r

            def stream_goes_on(data):
                first, after = c.recognize_stream([request("x", data), request("next", crop)])
                assert after.WhichOneof("outcome") == "result", "the stream did not go on"
                return first

            def each_answered(frames):
                """One call per frame; the answers' codes and each one's time (the row's ms is their sum)."""
                codes, times = {}, []
                for data in frames:
                    t0 = time.perf_counter()
                    r = one(data)
                    times.append((time.perf_counter() - t0) * 1e3)
                    code = "OK" if r.WhichOneof("outcome") == "result" else pb.Error.Code.Name(r.error.code)
                    codes[code] = codes.get(code, 0) + 1
                return (", ".join(f"{n} in-band {k}" for k, n in sorted(codes.items())) +
                        f"; each in {min(times):.1f}-{max(times):.1f} ms, median {statistics.median(times):.1f}")

            def two_bombs_and_a_crop():
                out = []
                ts = [threading.Thread(target=lambda: out.append(one(bomb_4096))) for _ in range(2)]
                for t in ts:
                    t.start()
                r = one(crop)
                for t in ts:
                    t.join()
                return r

            def with_token(token, fn):
                with Client(server.target, timeout=60, token=token) as other:
                    return fn(other)

            def idle_streams(n, send_a_crop=False):
                """n streams at once; idle (nothing sent: a stream still open after 3 s was accepted), or each
                sending one crop (then it is the load of as many frames at once: work, not idleness)."""
                release = threading.Event()

                def held():
                    if send_a_crop:
                        yield request("idle", crop)
                    release.wait(120)
                    yield from ()

                t0 = time.perf_counter()
                opened, ended = [], {}
                calls = []
                for i in range(n):
                    calls.append(c.recognize_stream(held()))
                    opened.append(time.perf_counter())
                    calls[-1].add_done_callback(lambda _, i=i: ended.setdefault(i, time.perf_counter()))
                codes: dict[str, int] = {}
                refused_by = ""
                if send_a_crop:
                    for call in calls:
                        try:
                            next(call)
                            codes["OK (served)"] = codes.get("OK (served)", 0) + 1
                        except grpc.RpcError as e:
                            codes[e.code().name] = codes.get(e.code().name, 0) + 1
                else:  # watch for 3 s: when did the last refusal arrive?
                    done, last = 0, t0
                    while time.perf_counter() - t0 < 3:
                        now_done = sum(call.done() for call in calls)
                        if now_done > done:
                            done, last = now_done, time.perf_counter()
                        time.sleep(0.005)
                    waits = [(ended[i] - opened[i]) * 1e3 for i in sorted(ended)]
                    refused_by = (f" (the last refusal {(last - t0) * 1e3:.0f} ms after the first stream opened; "
                                  f"each refused {min(waits):.1f}-{max(waits):.1f} ms after it opened, median "
                                  f"{statistics.median(waits):.1f})" if waits else "")
                    for call in calls:
                        name = call.code().name if call.done() else "open (accepted)"
                        codes[name] = codes.get(name, 0) + 1
                release.set()
                for call in calls:
                    call.cancel()
                return ", ".join(f"{v} {k}" for k, v in sorted(codes.items())) + refused_by

            def flood(n):
                """One stream sends n frames as fast as it can; its answers are read only after all are sent."""
                sent = threading.Event()

                def frames():
                    for i in range(n):
                        yield request(f"f{i}", crop)
                    sent.set()
                answers = c.recognize_stream(frames())
                sent.wait(600)
                got = sum(r.WhichOneof("outcome") == "result" for r in answers)
                return f"{got} of {n} answered (the server read at most 8 ahead: back-pressure)"

            def second_server():
                proc = subprocess.run([sys.executable, "-m", "facelink.cloud.cli", "serve", "--port", str(server.port),
                                       "--model", DEFAULT_MODEL, "--gallery", str(work / "g2.db")],
                                      capture_output=True, text=True, timeout=300)
                return f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1][:120]}"

            attacks = [
                ("container declaring 4096x4096, valid CRC, 792 KB", one, bomb_4096),
                ("two such containers at once, then a normal crop (its answer)", two_bombs_and_a_crop,
                 FIRST_CROP),
                ("the same crop again, alone (legal work, after the first one)", one, crop),
                ("container declaring 640x640, just over the pixel budget (640x512)", one, at_budget),
                ("container declaring 640x512 (the pixel budget), random 64 KB payload", one, within_budget),
                (f"{len(other_payloads)} more such containers, other random payloads, one by one", each_answered,
                 other_payloads),
                ("legal work: a real 640x480 full frame", one, vga,
                 LEGAL_FULL_FRAME),
                ("a real 1024x1024 full frame (over the default pixel budget)", one, megapixel),
                ("frame of 4 MiB (over the frame limit, under gRPC's), then a crop on the same stream",
                 stream_goes_on, os.urandom(4 << 20)),
                ("frame of 17 MiB (over gRPC's message limit)", one, os.urandom(17 << 20)),
                # gRPC's own refusal, just over its limit: this row against the one above tells the time of
                # pushing the bytes from the refusal's own (grpc.http.tarpit off: facelink.benchmarks.grpc_refusal)
                ("frame of 8 MiB + 65 KiB (just over gRPC's message limit)", one, os.urandom((8 << 20) + (65 << 10))),
                ("top_k 1000 (paging through the gallery)", lambda: one(crop, top_k=1000)),
                (f"Enroll: valid PNG of 30000x30000 ({len(png30) >> 10} KB)",
                 lambda: c.enroll("Bomb", image=png30)),
                (f"Enroll: valid PNG of 40000x40000 ({len(png40) >> 10} KB)",
                 lambda: c.enroll("Bomb", image=png40)),
                ("Enroll: JPEG header declaring 60000x60000",
                 lambda: c.enroll("Bomb", image=jpeg_header(60000, 60000))),
                ("Enroll: '  Colin Powell  ' (alias by whitespace)", lambda: c.enroll("  Colin Powell  ", image=photo)),
                ("Enroll: 'Colin\\u200bPowell' (zero-width space)", lambda: c.enroll("Colin\u200bPowell", image=photo)),
                ("Enroll: 'C\\u043elin Powell' (Cyrillic o)", lambda: c.enroll("C\u043elin Powell", image=photo)),
                ("Enroll: '\\u202eColin Powell' (right-to-left override)",
                 lambda: c.enroll("\u202eColin Powell", image=photo)),
                ("Enroll: identity name of 1 MB", lambda: c.enroll("n" * (1 << 20), image=photo)),
                ("Enroll: source_name of 300 characters", lambda: c.enroll("Colin Powell", image=photo,
                                                                           source_name="s" * 300)),
                ("Enroll: source_name of 10 MB", lambda: c.enroll("Colin Powell", image=photo,
                                                                  source_name="s" * (10 << 20))),
                ("Enroll without a token", lambda: with_token(None, lambda o: o.enroll("Mallory", image=photo))),
                ("Enroll with an edge token", lambda: with_token(edge, lambda o: o.enroll("Mallory", image=photo))),
                ("ListIdentities without a token", lambda: with_token(None, lambda o: o.identities())),
                ("Recognize without a token", lambda: with_token(None, lambda o: list(o.recognize_stream(
                    [request("x", crop)])))),
                (f"{args.idle_streams} idle streams at once (limit 64)", idle_streams, args.idle_streams),
                (f"{args.idle_streams} streams at once, each sending a crop (64 frames of work at once)", idle_streams,
                 args.idle_streams, True,
                 FIRST_BURST),
                (f"the same again ({args.idle_streams} streams, 64 crops at once)", idle_streams, args.idle_streams,
                 True),
                ("one stream sending 2000 crops without reading answers", flood, 2000),
                ("a second server on the same port", second_server),
            ]
            for what, fn, *fargs in attacks:
                note = fargs.pop() if fargs and isinstance(fargs[-1], Note) else None
                row = {"attack": what, **measure(server, fn, *fargs), **({"note": note} if note else {})}
                if isinstance(row["answer"], pb.EnrollResponse):
                    row["answer"] = f"OK (enrolled, {row['answer'].samples} samples)"
                elif not isinstance(row["answer"], str):
                    row["answer"] = str(row["answer"])[:160]
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
            c.close()
        finally:
            server.stop()
    doc = stamp({"command": "facelink bench attacks " + " ".join(argv if argv is not None else sys.argv[1:]),
                 "server": "facelink serve defaults + --auth-tokens (attacks that need a role use the admin token)"
                           + "".join(f" {a}" for a in args.server_arg),
                 "rss_mb_at_start": rss_at_start, "rows": rows, **({"note": args.note} if args.note else {})})
    emit_json(doc, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
