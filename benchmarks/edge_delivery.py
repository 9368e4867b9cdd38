"""Edge delivery under faults, with real processes on loopback: exactly once, or counted as dropped.

  facelink bench edge-delivery [--frames 600] [--kills 3] [--out benchmarks/results/edge_delivery.json]

Each scenario is a real ``facelink serve`` and a real ``facelink-edge send`` of pre-coded face crops (.flk, coded
once from LFW images, or from the demo faces when the assets are absent) through the on-device outbox:

- ``server_kill``: the server is killed (SIGKILL) during delivery and restarted on the same port, ``--kills`` times;
- ``network_cut``: the link runs through a TCP proxy on loopback that drops every connection and refuses new ones
  for longer than the sender's longest back-off, then heals, ``--kills`` times;
- ``client_kill``: the sending client is killed (SIGKILL) during delivery and started again, ``--kills`` times;
- ``outbox_overflow``: the link is down from the start while the client queues twice as many crops as its outbox
  holds (``--max-outbox-frames`` half the crops): the oldest half is dropped by the policy, counted and reported,
  and the newest half is delivered once the link heals;
- ``run_server_kill``: ``server_kill`` with the camera path instead of pre-coded crops: ``facelink-edge run`` over a
  folder of ``--frames`` face images (``--every-face``: detection, alignment and coding of every face) while the
  server is killed and restarted; its frame count is what the run queued.

Counted from the server's side (its de-duplication store: which (device, sequence) keys it answered and how often
it recognised each): ``delivered`` (distinct crops answered), ``duplicates`` (recognitions beyond the first of a
crop), ``lost`` (queued crops neither delivered nor dropped by the outbox's drop-oldest policy), and the client's
results file is checked to hold one line per crop (``duplicate_result_lines``, ``missing_result_lines``).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from facelink.cloud.evaluation.provenance import emit_json, stamp
from facelink.shared.registry import DEFAULT_MODEL

SERVER_MODEL = DEFAULT_MODEL  # the edge's default rate point: the crops are coded with it, the server serves it
SCENARIOS = ("server_kill", "network_cut", "client_kill", "outbox_overflow", "run_server_kill")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- crops -------------------------------------------------------------------------------------------------------
def make_crops(folder: Path, frames: int, images: list[Path] | None = None, assets=None) -> list[Path]:
    """``frames`` coded face crops as .flk files in ``folder``, from ``images`` or else LFW images outside View 2
    when the assets are there, else the demo faces; repeated under new names when there are fewer faces than
    frames (the delivery does not care what the crops show)."""
    import cv2

    from facelink.edge.encoder import EdgePipeline

    images = images or source_images(assets)
    pipe = EdgePipeline()
    folder.mkdir(parents=True, exist_ok=True)
    coded: list[tuple[str, bytes]] = []
    for path in images:
        if len(coded) == frames:
            break
        enc = pipe.process(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
        if enc is not None:
            coded.append((path.stem, enc.data))
    if not coded:
        raise RuntimeError("no face found in any image to code")
    files = []
    for i in range(frames):
        name, data = coded[i % len(coded)]
        f = folder / f"{i:05d}_{name}.flk"
        f.write_bytes(data)
        files.append(f)
    return files


def source_images(assets=None) -> list[Path]:
    """Face images to code: LFW images outside View 2 when the assets are there, else the demo faces."""
    from facelink.shared.paths import DEMO_FACES_DIR

    try:
        from facelink.cloud.training import datasets

        images = [im.path for im in datasets.lfw_train_images(assets)]
    except OSError:
        images = []
    return images or sorted(DEMO_FACES_DIR.rglob("*.jpg"))


def make_frames(folder: Path, frames: int, images: list[Path]) -> Path:
    """A folder of ``frames`` image files (``images`` repeated under new names when fewer), for ``run``."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        src = images[i % len(images)]
        shutil.copyfile(src, folder / f"{i:05d}_{src.name}")
    return folder


# -- processes ---------------------------------------------------------------------------------------------------
class ServerProcess:
    """``facelink serve`` on a fixed loopback port (so a restarted server is found where the old one was)."""

    def __init__(self, work: Path, port: int | None = None, start_timeout: float = 180.0, extra: tuple = ()):
        self.work, self.port, self.start_timeout, self.extra = work, port or free_port(), start_timeout, extra
        self.gallery = work / "gallery.db"
        self.proc: subprocess.Popen | None = None
        self.kills = 0

    @property
    def dedup(self) -> Path:
        from facelink.cloud.serving.dedup import path_beside

        return Path(path_beside(self.gallery))

    def start(self) -> ServerProcess:
        ready = self.work / "server-ready.json"
        ready.unlink(missing_ok=True)
        log = open(self.work / "server.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "facelink.cloud.cli", "serve", "--port", str(self.port), "--gallery",
             str(self.gallery), "--ready-file", str(ready), "--model", SERVER_MODEL, "--workers", "1",
             *map(str, self.extra)],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        t0 = time.monotonic()
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}); see {self.work / 'server.log'}")
            if time.monotonic() - t0 > self.start_timeout:
                self.kill()
                raise RuntimeError(f"the server did not start in {self.start_timeout:.0f} s")
            time.sleep(0.1)
        return self

    def kill(self) -> None:
        """SIGKILL: no clean-up, no graceful stream ends."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class ClientProcess:
    """``facelink-edge send`` of a folder of crops through an outbox, results to a file."""

    def __init__(self, work: Path, crops: Path, port: int, device: str, backoff_max: float = 1.0,
                 max_outbox_frames: int | None = None, command: str = "send"):
        self.work, self.crops, self.port, self.device, self.backoff_max = work, crops, port, device, backoff_max
        self.max_outbox_frames, self.command = max_outbox_frames, command
        self.outbox = work / f"{device}-outbox.db"
        self.results = work / f"{device}-results.jsonl"
        self.proc: subprocess.Popen | None = None
        self.kills = 0

    def start(self) -> ClientProcess:
        log = open(self.work / f"{self.device}-client.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "facelink.edge.cli", self.command, str(self.crops),
             *(["--every-face", "--drain-timeout", "3600", "--timeout", "5"] if self.command == "run" else []),
             "--server", f"127.0.0.1:{self.port}",
             "--outbox", str(self.outbox), "--device", self.device, "--results", str(self.results),
             "--backoff-max", str(self.backoff_max), "--window", "8",
             *(["--max-outbox-frames", str(self.max_outbox_frames)] if self.max_outbox_frames else [])],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    def answered(self) -> int:
        try:
            with open(self.results, "rb") as f:
                return f.read().count(b"\n")
        except FileNotFoundError:
            return 0

    def wait_answered(self, n: int, timeout: float) -> None:
        t0 = time.monotonic()
        while self.answered() < n:
            if self.proc.poll() is not None:
                return
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{self.device}: fewer than {n} answers after {timeout:.0f} s")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.kills += 1

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def summary(self) -> dict:
        """The client's last summary (send) or report's delivery (run): answers, replays, reconnects, outbox."""
        lines = (self.work / f"{self.device}-client.log").read_text().splitlines()
        rows = [json.loads(x) for x in lines if x.startswith(('{"event": "summary"', '{"event": "report"'))]
        return rows[-1].get("delivery", rows[-1]) if rows else {}


# -- the dropping proxy ------------------------------------------------------------------------------------------
class DroppingProxy:
    """A TCP proxy on loopback that can cut the link: :meth:`cut` drops every connection and refuses new ones (they
    are accepted and reset at once) until :meth:`heal`."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = 0
        self.down = False
        self.cuts = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dropping-proxy", daemon=True)

    def start(self) -> DroppingProxy:
        self._thread.start()
        self._started.wait()
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._started.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer, up_writer}
        self._writers |= pair

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._writers -= pair

    def _drop_all(self) -> None:
        self.down = True
        for w in list(self._writers):
            w.transport.abort()

    def cut(self) -> None:
        self._loop.call_soon_threadsafe(self._drop_all)
        self.cuts += 1

    def heal(self) -> None:
        self.down = False

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._drop_all)
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


# -- counting ----------------------------------------------------------------------------------------------------
def count(client: ClientProcess, dedup: Path, frames: int | None) -> dict:
    """The delivery figures, from the server's de-duplication store, checked against the client's results file.
    ``frames`` None: what the client queued (``run`` codes as many crops as it finds faces)."""
    from facelink.cloud.serving.dedup import DedupStore
    from facelink.edge.outbox import Outbox

    with Outbox(client.outbox) as outbox:
        device_id, stats = outbox.device_id, outbox.stats()
    served = DedupStore.read_deliveries(dedup, device_id)
    frames = stats.queued if frames is None else frames
    rows = [json.loads(x) for x in client.results.read_text().splitlines()]
    answers = collections.Counter(r["sequence"] for r in rows if "dropped" not in r and "skipped" not in r)
    dropped = {r["sequence"] for r in rows if "dropped" in r}
    delivered = {d.sequence for d in served}
    return {
        "frames": frames, "queued": stats.queued, "delivered": len(delivered),
        "duplicates": sum(d.recognised - 1 for d in served),
        "lost": frames - len(delivered) - stats.dropped_frames,
        "dropped_by_policy": stats.dropped_frames,
        "replays": sum(d.replays for d in served),
        "still_queued": stats.frames,
        "error_answers": sum(1 for r in rows if "error" in r),  # in-band refusals: should be none for these crops
        "duplicate_result_lines": sum(n - 1 for n in answers.values()),
        "missing_result_lines": len(delivered - set(answers)),
        "dropped_lines": len(dropped),
        "delivered_and_dropped": len(delivered & dropped),
        "sequences_match": set(answers) == delivered and delivered | dropped == set(range(1, frames + 1)),
    }


@dataclass
class Plan:
    frames: int
    kills: int
    backoff_max: float = 1.0
    cut_s: float = 3.0      # longer than the back-off's ceiling, so the sender waits through several attempts
    timeout_s: float = 300.0

    def kill_points(self) -> list[int]:
        """Answers after which to strike: spread over the first three quarters of the delivery."""
        return [max(1, round(self.frames * 0.75 * (i + 1) / (self.kills + 1))) for i in range(self.kills)]


def run_scenario(name: str, work: Path, crops: Path, plan: Plan, server: ServerProcess | None = None) -> dict:
    """One scenario on its own device (and, unless ``server`` is given, its own server); returns its figures."""
    work.mkdir(parents=True, exist_ok=True)
    own_server = server is None
    server = server or ServerProcess(work).start()
    proxy = DroppingProxy(server.port).start() if name in ("network_cut", "outbox_overflow") else None
    kills_before = server.kills
    overflow, camera = name == "outbox_overflow", name.startswith("run_")
    client = ClientProcess(work, crops, proxy.port if proxy else server.port, f"{name.replace('_', '-')}",
                           plan.backoff_max, max_outbox_frames=plan.frames // 2 if overflow else None,
                           command="run" if camera else "send")
    t0 = time.monotonic()
    try:
        if overflow:
            proxy.cut()  # down before the first crop is queued
        client.start()
        if overflow:  # every crop queued (each dropped one is a line in the results) while nothing gets through
            client.wait_answered(plan.frames - plan.frames // 2, plan.timeout_s)
            time.sleep(plan.cut_s)
            proxy.heal()
        for at in plan.kill_points() if not overflow else []:
            client.wait_answered(at, plan.timeout_s)
            if name in ("server_kill", "run_server_kill"):
                server.kill()
                time.sleep(plan.backoff_max)  # the client finds nobody there for a while
                server.start()
            elif name == "network_cut":
                proxy.cut()
                time.sleep(plan.cut_s)
                proxy.heal()
            elif name == "client_kill":
                client.kill()
                client.start()
        rc = client.wait(plan.timeout_s)
        seconds = time.monotonic() - t0
    finally:
        client.kill()
        if proxy:
            proxy.close()
        if own_server:
            server.stop()
    figures = count(client, server.dedup, None if camera else plan.frames)
    if camera:
        figures["images"] = plan.frames
    summary = client.summary()
    return {**figures, "server_kills": server.kills - kills_before, "client_kills": client.kills,
            "network_cuts": proxy.cuts if proxy else 0, "client_exit": rc,
            "client_reconnects_last_run": summary.get("reconnects"), "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="facelink bench edge-delivery", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=600, help="coded crops delivered per scenario (default %(default)s)")
    ap.add_argument("--kills", type=int, default=3,
                    help="server kills, link cuts or client kills per scenario (default %(default)s)")
    ap.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS),
                    help="which scenarios to run (default: all three)")
    ap.add_argument("--backoff-max", type=float, default=1.0,
                    help="the sender's longest back-off, seconds; each link cut lasts three times as long")
    ap.add_argument("--assets", help="assets folder (default ../shared/assets or $FACELINK_ASSETS)")
    ap.add_argument("--work", type=Path, help="folder for servers, outboxes and logs (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/edge_delivery.json"),
                    help="result JSON, with provenance (default %(default)s)")
    args = ap.parse_args(argv)
    if args.frames < 1 or args.kills < 0:
        ap.error("--frames must be >= 1 and --kills >= 0")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="facelink-edge-delivery-") as tmp:
        work = args.work or Path(tmp)
        images = source_images(args.assets)
        crops = work / "crops"
        make_crops(crops, args.frames, images)
        frames = make_frames(work / "frames", args.frames, images) if "run_server_kill" in args.scenarios else None
        plan = Plan(args.frames, args.kills, backoff_max=args.backoff_max, cut_s=3 * args.backoff_max)
        results = {name: run_scenario(name, work / name, frames if name.startswith("run_") else crops, plan)
                   for name in args.scenarios}
    doc = {"command": " ".join(["facelink bench edge-delivery", *(argv if argv is not None else sys.argv[1:])]),
           "frames": args.frames, "kills_per_scenario": args.kills, "backoff_max_s": args.backoff_max,
           "cut_s": plan.cut_s, "server_model": SERVER_MODEL, "cpus": os.cpu_count(), "scenarios": results}
    emit_json(stamp(doc), args.out)
    ok = all(r["lost"] == 0 and r["duplicates"] == 0 and r["duplicate_result_lines"] == 0 and r["sequences_match"]
             for r in results.values())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
