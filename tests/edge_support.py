"""Helpers for the edge's tests: synthetic camera sequences made from demo photographs, and a real server on
loopback (``facelink serve`` in its own process)."""
from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

FPS = 15


def standing_person(photos: list[Path], n: int = 150, seed: int = 0, size: tuple[int, int] = (640, 480)):
    """``n`` frames of the people in ``photos`` standing side by side before a camera: each photograph scaled by
    1 ± 8 % (slowly, as someone leaning in and out) and jittered by up to 4 px per frame, on a plain background."""
    rng = np.random.default_rng(seed)
    faces = [cv2.imread(str(p)) for p in photos]
    w, h = size
    for i in range(n):
        canvas = np.full((h, w, 3), 90, np.uint8)
        for k, face in enumerate(faces):
            s = 1.0 + 0.08 * np.sin(i / 20 + k) + rng.normal(0, 0.01)
            f = cv2.resize(face, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
            fh, fw = f.shape[:2]
            x = int((k + 0.5) * w / len(faces) - fw / 2 + rng.integers(-4, 5))
            y = int((h - fh) / 2 + rng.integers(-4, 5))
            canvas[y:y + fh, x:x + fw] = f
        yield canvas


def write_video(path: Path, frames, fps: float = FPS) -> Path:
    """Frames (BGR) as an MJPG video, which OpenCV writes and reads without any codec of the system."""
    writer = None
    for frame in frames:
        if writer is None:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, frame.shape[1::-1])
            assert writer.isOpened(), "OpenCV cannot write MJPG here"
        writer.write(frame)
    writer.release()
    return path


@contextlib.contextmanager
def facelink_server(work: Path, timeout: float = 180.0, extra: tuple[str, ...] = ()):
    """A real ``facelink serve`` on a free loopback port with a fresh gallery; yields its HOST:PORT."""
    ready = work / "ready.json"
    log = open(work / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "facelink.cloud.cli", "serve", "--port", "0", "--gallery",
                             str(work / "gallery.db"), "--ready-file", str(ready), *extra],
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        t0 = time.time()
        while not ready.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited: {(work / 'server.log').read_text()[-2000:]}")
            if time.time() - t0 > timeout:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)
        yield f"127.0.0.1:{json.loads(ready.read_text())['port']}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextlib.contextmanager
def mjpeg_stream(frames, fps: float = FPS):
    """An HTTP MJPEG camera on loopback (multipart/x-mixed-replace, as IP cameras serve it) sending ``frames`` at
    ``fps`` to each client, then ending; yields its URL."""
    import http.server
    import socketserver
    import threading

    jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames]

    class Camera(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the handler's name is http.server's)
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            for jpeg in jpegs:
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                                 + jpeg + b"\r\n")
                time.sleep(1 / fps)

        def log_message(self, *args):
            pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Camera)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/stream.mjpg"
    finally:
        server.shutdown()
        server.server_close()
