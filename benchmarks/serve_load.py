"""Load on a real ``facelink serve`` over loopback: frames per second, latency and server memory at several stream
counts, for the per-frame path and the batched one in one run.

  facelink bench serve [--streams 1 8 32] [--seconds 20] [--modes before after]
                       [--out benchmarks/results/serve_load.json]
  facelink bench serve --streams 8 --seconds 600 --warmup 30 --modes after --rss-every 30
                       --out benchmarks/results/serve_soak.json          (a soak: RSS over 10 minutes)

Each mode is its own server process on a fresh gallery with a few enrolled identities:

- ``before``: the server as it was before this work: ``--batching off --stream-window 1 --torch-threads 0
  --no-warmup`` (the per-frame path: one frame of a stream at a time, each decoded and recognised alone in the worker
  pool, one network call at a time with torch's default threads) and the pure-Python rANS decoder
  (``FACELINK_PURE_RANS=1`` in the server's environment); its recognizer is today's (the frozen TorchScript
  MobileFaceNet), its synthesis eager;
- ``after``: the defaults (micro-batches of the synthesis and the recognizer across streams, 8 frames of a stream
  in flight, one torch thread per network so that the two run on two cores at once, the native rANS decoder where
  it is built);
- ``after-torch0``: the defaults with torch's default threads (one network call at a time, on every core);
- ``after-no-warmup``: the defaults without the start-up warm-up (the server before it had one).

The load: N streams on one grpc.aio channel per stream, each a closed loop with ``--in-flight`` frames outstanding
(default 1: send, wait for the answer, send the next), cycling through aligned face crops coded once by the edge
pipeline (LFW training images, or the demo faces without the assets). After ``--warmup`` seconds, answers are
counted for ``--seconds``: frames/s, p50/p99 latency (send → answer), in-band errors, the server's RSS
(resident now and its peak) and the server's CPU time per answered frame (user + system over the whole point,
warm-up included): on a machine shared with other work the wall-clock figures follow the share of the cores the
server gets, while CPU per frame is the server's own cost (``2000 / cpu_ms`` bounds frames/s on 2 free cores).
Modes alternate per stream count, so a change in the machine's load hits both.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from facelink.cloud.evaluation.provenance import emit_json, stamp
from facelink.shared.registry import DEFAULT_MODEL

MODES = {
    "before": ["--batching", "off", "--stream-window", "1", "--torch-threads", "0", "--no-warmup"],
    "after": [],
    "after-torch0": ["--torch-threads", "0"],
    "after-no-warmup": ["--no-warmup"],
}
# Environment of a mode's server beyond this process's own
MODE_ENV = {"before": {"FACELINK_PURE_RANS": "1"}}
DEFAULT_OUT = Path("benchmarks/results/serve_load.json")


def crops(n: int) -> tuple[list[bytes], list[tuple[str, bytes]]]:
    """``n`` coded aligned crops, and (name, JPEG bytes) of a few identities to enrol."""
    import cv2

    from facelink.edge.encoder import EdgePipeline
    from facelink.shared.paths import DEMO_FACES_DIR

    images: list[Path] = []
    try:
        from facelink.cloud.training import datasets

        images = [im.path for im in datasets.lfw_train_images()][: n * 2]
    except Exception:  # noqa: BLE001 - without the assets, the demo faces
        pass
    if len(images) < n:
        images = sorted(DEMO_FACES_DIR.glob("*/*.jpg"))
    pipe = EdgePipeline(DEFAULT_MODEL)
    out = []
    for p in images:
        if len(out) == n:
            break
        rgb = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        try:
            out.append(pipe.process(rgb).data)
        except Exception:  # noqa: BLE001 - no face found: skip the image
            continue
    while len(out) < n:
        out += out[: n - len(out)]
    enroll = [(p.stem.rsplit("_", 1)[0].replace("_", " "), p.read_bytes())
              for p in sorted((DEMO_FACES_DIR / "enroll").glob("*.jpg"))]
    return out, enroll


class Server:
    def __init__(self, work: Path, args: list[str], env: dict[str, str] | None = None):
        self.ready = work / "ready.json"
        self.err = open(work / "server.err", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "facelink.cloud.cli", "serve", "--port", "0", "--model",
                                      DEFAULT_MODEL, "--gallery", str(work / "gallery.db"), "--ready-file",
                                      str(self.ready), *args], stdout=subprocess.DEVNULL, stderr=self.err,
                                     env={**os.environ, **(env or {})})
        t0 = time.time()
        while not self.ready.exists():
            if self.proc.poll() is not None or time.time() - t0 > 300:
                self.proc.kill()
                raise RuntimeError(f"server did not start: {(work / 'server.err').read_text()[-2000:]}")
            time.sleep(0.2)
        self.target = f"127.0.0.1:{json.loads(self.ready.read_text())['port']}"

    def rss_mb(self) -> tuple[float, float]:
        """(resident now, peak) in MB, from /proc."""
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

    def cpu_s(self) -> float:
        """CPU seconds the server has used (user + system), from /proc."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.err.close()


async def load(target: str, frames: list[bytes], streams: int, seconds: float, warmup: float, in_flight: int,
               rss=None, rss_every: float = 10.0):
    """One point; ``rss``: a callable giving the server's resident MB, sampled every ``rss_every`` s of the measured
    window (the soak's series: its first sample, at the window's start, against its last)."""
    import grpc

    from facelink.v1 import facelink_pb2 as pb
    from facelink.v1 import facelink_pb2_grpc as pb_grpc

    latencies: list[float] = []
    errors = answered = total = 0
    t_start = time.perf_counter()
    t_measure, t_end = t_start + warmup, t_start + warmup + seconds

    async def one(k: int):
        nonlocal errors, answered, total
        async with grpc.aio.insecure_channel(target) as ch:
            stub = pb_grpc.FaceLinkStub(ch)
            call = stub.Recognize()
            sent: dict[str, float] = {}
            i = k * 7919

            async def send():
                nonlocal i
                rid = f"{k}-{i}"
                sent[rid] = time.perf_counter()
                await call.write(pb.RecognizeRequest(id=rid, bitstream=frames[i % len(frames)]))
                i += 1

            for _ in range(in_flight):
                await send()
            while True:
                resp = await call.read()
                now = time.perf_counter()
                t0 = sent.pop(resp.id)
                total += 1
                if t_measure <= t0 and now <= t_end:
                    answered += 1
                    latencies.append(now - t0)
                    errors += resp.WhichOneof("outcome") != "result"
                if now >= t_end:
                    break
                await send()
            await call.done_writing()
            call.cancel()

    series: list[list[float]] = []

    async def sample():
        await asyncio.sleep(max(0.0, t_measure - time.perf_counter()))
        while True:
            now = time.perf_counter()
            series.append([round(now - t_measure, 1), round(rss(), 1)])
            if now >= t_end:
                return
            await asyncio.sleep(min(rss_every, max(0.0, t_end - now)))

    samplers = [sample()] if rss is not None else []
    await asyncio.gather(*(one(k) for k in range(streams)), *samplers)
    lat = np.array(latencies) * 1e3 if latencies else np.zeros(1)
    row = {"frames_per_s": round(answered / seconds, 2), "answered": answered, "errors": errors, "total": total,
           "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1)}
    if series:
        row["rss_growth_pct"] = round(100.0 * (series[-1][1] - series[0][1]) / series[0][1], 2)
        row["rss_series_mb"] = series
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="facelink bench serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32], help="stream counts (default 1 8 32)")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per point (default %(default)s)")
    ap.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each point")
    ap.add_argument("--in-flight", type=int, default=1, help="frames each stream keeps outstanding (default 1)")
    ap.add_argument("--modes", nargs="+", choices=sorted(MODES), default=["before", "after"],
                    help="server configurations to measure (default before after)")
    ap.add_argument("--crops", type=int, default=64, help="distinct coded crops cycled through (default 64)")
    ap.add_argument("--rss-every", type=float, default=0.0,
                    help="sample the server's RSS every this many seconds of each point (a soak: --streams 8 "
                         "--seconds 600 --modes after --rss-every 30); default 0: only at the end")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="result JSON (default %(default)s)")
    ap.add_argument("--note", default="", help="how the machine was when this ran (kept in the result)")
    args = ap.parse_args(argv)
    frames, enroll = crops(args.crops)
    rows = []
    with tempfile.TemporaryDirectory(prefix="facelink-load-") as tmp:
        servers = {}
        try:
            for mode in args.modes:
                work = Path(tmp) / mode
                work.mkdir()
                servers[mode] = Server(work, MODES[mode], MODE_ENV.get(mode))
                from facelink.edge.client import Client

                with Client(servers[mode].target) as c:
                    for name, data in enroll:
                        c.enroll(name, image=data)
            for streams in args.streams:
                for mode in args.modes:
                    cpu0 = servers[mode].cpu_s()
                    rss = (lambda m=mode: servers[m].rss_mb()[0]) if args.rss_every > 0 else None
                    row = asyncio.run(load(servers[mode].target, frames, streams, args.seconds, args.warmup,
                                           args.in_flight, rss, args.rss_every))
                    row["server_cpu_ms_per_frame"] = round((servers[mode].cpu_s() - cpu0) * 1e3 / row.pop("total"), 1)
                    rss, peak = servers[mode].rss_mb()
                    row = {"mode": mode, "streams": streams, **row, "rss_mb": round(rss, 1),
                           "peak_rss_mb": round(peak, 1)}
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    rows.append(row)
        finally:
            for s in servers.values():
                s.stop()
    by = {(r["mode"], r["streams"]): r for r in rows}
    ratios = {m: {str(s): round(by[m, s]["frames_per_s"] / by["before", s]["frames_per_s"], 2)
                  for s in args.streams if ("before", s) in by and by["before", s]["frames_per_s"]}
              for m in args.modes if m != "before"}
    doc = stamp({"command": "facelink bench serve " + " ".join(argv if argv is not None else sys.argv[1:]),
                 "modes": {m: MODES[m] for m in args.modes},
                 "mode_env": {m: MODE_ENV[m] for m in args.modes if m in MODE_ENV},
                 "seconds": args.seconds, "in_flight": args.in_flight,
                 "cpus": os.cpu_count(), "rows": rows, "throughput_ratio_over_before": ratios,
                 **({"note": args.note} if args.note else {})})
    emit_json(doc, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
