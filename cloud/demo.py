"""``facelink demo``: the whole edge-to-cloud pipeline on loopback, on defaults shipped in the repository.

1. starts ``facelink serve`` (a real grpc.aio server) on a free loopback port with a fresh SQLite gallery;
2. enrolls the demo identities from their uncompressed photographs;
3. runs the edge client (``facelink-edge run``, its own process, no torch) on a folder of other photographs of
   them: each face is detected, aligned, coded, written to the client's outbox and delivered from there (exactly
   once; ``--every-face``, as the photographs are of different people, not frames of one camera);
4. prints file, bytes, bpp, predicted identity, similarity and the time each crop waited in the outbox for its
   answer, the edge's own report (frames, faces, crops, bytes, what is left in the outbox), then stops the server.
   ``--full-frame`` codes whole photographs instead and sends them with ``facelink-edge stream`` (no outbox: ``run``
   sends face crops).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from facelink.shared.paths import DEMO_FACES_DIR


def _wait_ready(proc: subprocess.Popen, ready: Path, timeout: float) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if ready.exists():
            return json.loads(ready.read_text())
        if proc.poll() is not None:
            log = ready.with_name("server.log")
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"the server exited with status {proc.returncode} before serving:\n{tail}")
        time.sleep(0.2)
    raise TimeoutError(f"the server did not come up within {timeout:.0f} s")


def _health(target: str) -> str:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="facelink.v1.FaceLink"),
                                                    timeout=10)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def identity_of(path: str) -> str:
    """Demo file names are LFW's: <First_Last>_NNNN.jpg."""
    return Path(path).stem.rsplit("_", 1)[0].replace("_", " ")


def _tool(script: str, module: str) -> list[str]:
    """A console script beside this interpreter, or ``python -m module`` where it is not installed."""
    exe = Path(sys.executable).parent / script
    return [str(exe)] if exe.exists() else [sys.executable, "-m", module]


def run(faces: Path = DEMO_FACES_DIR, model: str | None = None, full_frame: bool = False, keep: Path | None = None,
        timeout: float = 180.0, out=sys.stdout) -> dict:
    work = Path(tempfile.mkdtemp(prefix="facelink-demo-"))
    ready = work / "ready.json"
    server_cmd = _tool("facelink", "facelink.cloud.cli") + ["serve", "--port", "0", "--gallery",
                                                             str(work / "gallery.db"), "--ready-file", str(ready)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    print("[demo] starting the cloud server: facelink serve ...", file=out, flush=True)
    # the server's output goes to a file: an unread pipe could fill and stall it
    server_log = open(work / "server.log", "w")
    server = subprocess.Popen(server_cmd, stdout=server_log, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        info = _wait_ready(server, ready, timeout)
        target = f"127.0.0.1:{info['port']}"
        print(f"[demo] serving on {target}, health: {_health(target)}, models: {', '.join(info['models'])}, "
              f"recognizer: {info['recognizer']}", file=out, flush=True)

        from facelink.edge.client import Client

        enrolled = []
        with Client(target) as client:
            for f in sorted((faces / "enroll").glob("*.jpg")):
                name = identity_of(str(f))
                r = client.enroll(name, image=f.read_bytes(), source_name=f.name)
                enrolled.append(name)
                print(f"[demo] enrolled {name:<22} from {f.name} ({r.samples} sample)", file=out, flush=True)

        if full_frame:
            edge_args = ["stream", str(faces / "probe"), "--server", target, "--json", "--full-frame"]
        else:
            edge_args = ["run", str(faces / "probe"), "--every-face", "--server", target,
                         "--outbox", str(work / "outbox.db"), "--results", str(work / "results.jsonl")]
        if model:
            edge_args += ["--model", model]
        shown = " ".join(a if not a.startswith(str(work)) else Path(a).name for a in edge_args)
        print(f"[demo] edge client: facelink-edge {shown}", file=out, flush=True)
        res = subprocess.run(_tool("facelink-edge", "facelink.edge.cli") + edge_args, capture_output=True,
                             text=True, timeout=timeout, env=env)
        if res.returncode not in (0, 1):
            raise RuntimeError(f"the edge client failed ({res.returncode}): {res.stderr.strip()}")
        if full_frame:
            rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
            results = [r for r in rows if "id" in r]
            report = None
        else:
            rows = [json.loads(line) for line in (work / "results.jsonl").read_text().splitlines()]
            results = [dict(r, file=r["source"], latency_ms=1e3 * r["queued_s"]) for r in rows if "sequence" in r
                       and "dropped" not in r]
            report = json.loads([line for line in res.stderr.splitlines() if '"event": "report"' in line][-1])
        print(
            f"\n{'file':<28} {'bytes':>6} {'bpp':>6}  {'predicted':<20} {'sim':>6} {'ms':>7}  {'expected':<20}",
            file=out,
        )
        correct = 0
        for r in results:
            expected = identity_of(r["file"])
            expected_shown = expected if expected in enrolled else "(not enrolled)"
            if "error" in r:
                pred, sim = f"ERROR {r['error']['code']}", ""
            else:
                pred = r.get("identity") or ("(no face)" if not r.get("face_found") else "(unknown)")
                sim = f"{r['similarity']:.3f}"
                ok = (r.get("identity") == expected) if expected in enrolled else not r.get("identity")
                correct += ok
            print(
                f"{Path(r['file']).name:<28} {r['bytes']:>6} {r['bpp']:>6.3f}  {pred:<20} {sim:>6} "
                f"{r['latency_ms']:>7.1f}  {expected_shown:<20}",
                file=out,
            )
        for r in rows:
            if "skipped" in r:
                print(f"skipped {r['file']}: {r['skipped']}", file=out)
        if report is not None:
            left = report["delivery"]["outbox"]["frames"]
            print(f"\n[demo] edge report: {report['frames']} frames, {report['faces_detected']} faces, "
                  f"{report['crops_sent']} crops sent ({report['bytes_sent']} bytes), "
                  f"{report['delivery']['answered']} answered, {left} left in the outbox", file=out)
        summary = {
            "frames": len(results),
            "correct": correct,
            "mean_bytes": sum(r["bytes"] for r in results) / max(1, len(results)),
            "results": results,
        }
        print(
            f"\n[demo] {correct}/{len(results)} frames answered correctly; mean {summary['mean_bytes']:.0f} bytes "
            f"per face",
            file=out,
            flush=True,
        )
        return summary
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server_log.close()
        if keep:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copytree(work, keep, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)
        print("[demo] server stopped, temporary files removed", file=out, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="facelink demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--faces", type=Path, default=DEMO_FACES_DIR, help="folder with enroll/ and probe/ images")
    ap.add_argument("--model", help="codec rate point")
    ap.add_argument(
        "--full-frame", action="store_true", help="send whole frames behind the face ROI instead of aligned crops"
    )
    ap.add_argument(
        "--timeout", type=float, default=180.0, help="seconds to wait for the server to start (default %(default)s)"
    )
    args = ap.parse_args(argv)
    summary = run(args.faces, args.model, args.full_frame, timeout=args.timeout)
    return 0 if summary["frames"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
