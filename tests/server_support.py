"""Real facelink servers for tests: in this process on a loopback port (its own event loop in a thread, so that the
test can use the blocking client), or as a separate ``facelink serve`` process."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from facelink.cloud.serving.server import ServerConfig, shutdown, start
from facelink.shared.registry import DEFAULT_MODEL


class ServerThread:
    """``with ServerThread(gallery=..., ...) as s:`` a server on ``s.target`` until the block ends."""

    def __init__(self, **config):
        config.setdefault("port", 0)
        config.setdefault("models", [DEFAULT_MODEL])
        # No warm-up: it costs seconds per start, and these tests check answers, not what a first frame costs
        # (test_server_warmup.py starts servers with it)
        config.setdefault("warmup", False)
        self.cfg = ServerConfig(**config)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = self.port = self.service = None

    def _call(self, coro, timeout: float = 300.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        try:
            self.server, self.port, self.service = self._call(start(self.cfg))
        except BaseException:
            self.loop.call_soon_threadsafe(self.loop.stop)
            raise
        return self

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, grace: float = 5.0) -> None:
        if self.server is not None:
            self._call(shutdown(self.server, self.service, grace))
            self.server = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)

    def __exit__(self, *exc):
        self.stop()


def serve_process(work: Path, *args: str, timeout: float = 240.0) -> tuple[subprocess.Popen, dict]:
    """``facelink serve --port 0 ... ARGS`` as its own process (stdout and stderr to files in ``work``); returns the
    process and its ready file's JSON (port, metrics_port, ...)."""
    ready = work / "ready.json"
    ready.unlink(missing_ok=True)
    out, err = open(work / "server.out", "w"), open(work / "server.err", "w")
    proc = subprocess.Popen([sys.executable, "-m", "facelink.cloud.cli", "serve", "--port", "0", "--model",
                             DEFAULT_MODEL, "--ready-file", str(ready), *args], stdout=out, stderr=err, text=True)
    t0 = time.time()
    while not ready.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}: {(work / 'server.err').read_text()[-3000:]}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise RuntimeError("server did not start")
        time.sleep(0.1)
    return proc, json.loads(ready.read_text())
