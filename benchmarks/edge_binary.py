"""The one-file edge binary (``make edge-binary``): its size, what it holds, and its start-up time to the first face.

  facelink bench edge-binary [--binary dist/facelink-edge] [--runs 5] [--out benchmarks/results/edge_binary.json]

Start-up is timed from the process's launch, as a device would start it, on a demo photograph:
``offline``: until the first coded crop is printed (start, load the models, detect, align, encode);
``served``: until the first answer of a ``facelink serve`` on loopback is in the results file (the crop sent through
the outbox and answered). The binary unpacks itself once per build into its cache folder
(edge/packaging/selfextract.py): ``binary_first_launch`` is every launch with an empty cache (what the first start
after an install costs), ``binary`` every launch after that (the cache holds this build). The console script of this
checkout (``facelink-edge``, Python) is timed the same way, in the same run, for comparison. Medians over ``--runs``
launches; the machine may be shared, so the wall times are upper bounds, and the CPU seconds of a whole offline run
(unpacking, imports, models, one face) are given beside them.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from facelink.cloud.evaluation.provenance import emit_json, stamp
from facelink.shared.paths import DEMO_FACES_DIR

TARGETS = {"bytes": 150 * 2**20, "startup_to_first_frame_s": 3.0}


def _until_first_line(cmd: list[str], path: Path | None, timeout: float, env: dict | None = None
                      ) -> tuple[float, float]:
    """Seconds from launch until the first line on stdout (``path`` None) or in ``path``, and the CPU seconds (user +
    system, the process and its children) of the whole run, which waits for the process to finish."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        if path is None:
            line = proc.stdout.readline()
            took = time.perf_counter() - t0
            if not line:
                raise RuntimeError(f"{cmd[0]} printed nothing: {proc.communicate()[1][-2000:]}")
        else:
            while not (path.exists() and path.read_text().strip()):
                if proc.poll() is not None or time.perf_counter() - t0 > timeout:
                    raise RuntimeError(f"{cmd[0]} sent nothing: {proc.communicate()[1][-2000:]}")
                time.sleep(0.005)
            took = time.perf_counter() - t0
        proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return took, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _server(work: Path, timeout: float = 180.0) -> tuple[subprocess.Popen, str]:
    ready = work / "ready.json"
    proc = subprocess.Popen([sys.executable, "-m", "facelink.cloud.cli", "serve", "--port", "0", "--gallery",
                             str(work / "gallery.db"), "--ready-file", str(ready)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not ready.exists():
        if proc.poll() is not None or time.time() - t0 > timeout:
            proc.kill()
            raise RuntimeError("the server did not start")
        time.sleep(0.2)
    return proc, f"127.0.0.1:{json.loads(ready.read_text())['port']}"


def time_startup(exe: list[str], image: Path, server: str, runs: int, work: Path, cache: str = "warm") -> dict:
    """Launch ``exe`` ``runs`` times each way; every served launch has a fresh outbox and results file. ``cache``
    (the packed binary's unpacked copy, ``$FACELINK_EDGE_CACHE``): "warm" (one folder, filled by a launch before the
    timed ones) or "empty" (a new folder for every launch)."""
    work = Path(tempfile.mkdtemp(dir=work))

    def env(i: int) -> dict:
        return dict(os.environ, FACELINK_EDGE_CACHE=str(work / (f"cache-{i}" if cache == "empty" else "cache")))

    if cache == "warm":
        subprocess.run([*exe, "--help"], capture_output=True, env=env(0), check=True, timeout=120)
    def done(i: int) -> None:
        # an emptied cache's unpacked copy is removed at once: ten copies (2.6 GB) left waiting to be written out would
        # slow each later first launch down, as one first launch on a device is not
        if cache == "empty":
            shutil.rmtree(env(i)["FACELINK_EDGE_CACHE"], ignore_errors=True)

    offline, offline_cpu, served = [], [], []
    for i in range(runs):
        wall, cpu = _until_first_line([*exe, "run", str(image), "--offline"], None, 120, env(2 * i))
        done(2 * i)
        offline.append(wall)
        offline_cpu.append(cpu)
        results = work / f"results-{i}.jsonl"
        served.append(_until_first_line([*exe, "run", str(image), "--server", server, "--outbox",
                                         str(work / f"outbox-{i}.db"), "--results", str(results)],
                                        results, 120, env(2 * i + 1))[0])
        done(2 * i + 1)
    return {"offline_first_crop_s": _summary(offline), "offline_whole_run_cpu_s": _summary(offline_cpu),
            "served_first_answer_s": _summary(served)}


def _summary(seconds: list[float]) -> dict:
    return {"median": round(float(np.median(seconds)), 3), "all": [round(x, 3) for x in seconds]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="facelink bench edge-binary", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", type=Path, default=Path("dist/facelink-edge"), help="the built one-file binary")
    ap.add_argument("--runs", type=int, default=5, help="launches timed per path (default %(default)s)")
    ap.add_argument("--image", type=Path, default=DEMO_FACES_DIR / "probe" / "Colin_Powell_0002.jpg",
                    help="the photograph each launch codes (default: a demo face)")
    ap.add_argument("--out", type=Path, help="result JSON (with provenance)")
    ap.add_argument("--conditions", help="how the machine was while this ran (e.g. other work paused), recorded in "
                                         "the result")
    args = ap.parse_args(argv)
    if not args.binary.is_file():
        print(f"facelink bench edge-binary: {args.binary}: no such file (make edge-binary builds it)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "edge" / "packaging"))
    from check_binary import check

    from facelink.shared.registry import DEFAULT_MODEL

    contents = check(args.binary, DEFAULT_MODEL)
    python_script = Path(sys.executable).parent / "facelink-edge"
    with tempfile.TemporaryDirectory(prefix="facelink-bench-binary-") as tmp:
        work = Path(tmp)
        server, target = _server(work)
        try:
            first = time_startup([str(args.binary.resolve())], args.image, target, args.runs, work, "empty")
            binary = time_startup([str(args.binary.resolve())], args.image, target, args.runs, work, "warm")
            script = time_startup([str(python_script)], args.image, target, args.runs, work)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    result = {
        "command": "facelink bench edge-binary " + shlex.join(argv or []),
        "conditions": args.conditions,
        "binary": str(args.binary), "bytes": contents["bytes"], "mib": round(contents["bytes"] / 2**20, 1),
        "archive": {k: contents[k] for k in ("entries", "models", "forbidden", "missing", "ok")},
        "startup": {"binary": binary, "binary_first_launch": first, "python_console_script": script},
        "runs": args.runs,
        "image": args.image.name, "targets": TARGETS,
        "meets_targets": {"bytes": contents["bytes"] <= TARGETS["bytes"],
                          "startup_to_first_frame_s": binary["served_first_answer_s"]["median"]
                          <= TARGETS["startup_to_first_frame_s"],
                          "startup_to_first_frame_s_first_launch": first["served_first_answer_s"]["median"]
                          <= TARGETS["startup_to_first_frame_s"]},
        "note": "binary: launches with this build already unpacked in the cache folder (every start after the "
                "first); binary_first_launch: launches with an empty cache folder, which unpack the binary first; "
                "served_first_answer_s also includes the server's recognition of the crop, so it bounds the time to "
                "the first frame sent from above",
    }
    emit_json(stamp(result), args.out)
    return 0 if contents["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
