"""Delivery from the outbox to the server: exactly once, through dead links, killed servers and killed clients.

:class:`Sender` streams the outbox's unanswered crops (oldest first, at most ``window`` unanswered on the wire),
writes each answer to a :class:`ResultSink` and only then removes the crop from the outbox. When the stream breaks
(server gone, link cut, no answer for ``ack_timeout`` seconds) it reconnects after an exponential back-off with
jitter and resends every crop still in the outbox; the server answers a crop it has answered before from its
store, so a resend never counts twice. A restarted client finds its unanswered crops in the outbox file and does
the same. An answer is final, an in-band error included (a bad crop is not sent again), except ``INTERNAL``: that is
the server's fault, not the crop's, so the crop is sent again after a back-off, up to ``fault_retries`` times.

A results *file* is exactly-once too: an answer is written (and fsync'd) before its crop leaves the outbox, under one
lock, so after a kill only the file's last line can belong to a crop still queued; a restarted sender finds it there
and removes the crop without writing it again. On stdout an answer can appear twice if the client is killed between
the two steps (stdout cannot be read back).

``facelink-edge send`` is the command for crops coded beforehand (``.flk`` files); ``facelink-edge run`` feeds the
same outbox and sender from a camera. Both connect through :class:`Connection`: TLS with a CA file, an optional
client certificate and key (mTLS), and a bearer token read from a file or an environment variable (never from the
command line, where every user of the machine can read it).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from facelink.edge.outbox import DEFAULT_MAX_BYTES, DEFAULT_MAX_FRAMES, Dropped, Frame, Outbox
from facelink.shared import bitstream
from facelink.v1 import facelink_pb2 as pb

# Errors that another try cannot mend: the server refuses this client, or does not speak this API.
FATAL_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED)
# After a stop request, how long the answers already owed are awaited before the stream is cut (they stay queued).
STOP_GRACE_S = 5.0


class DeliveryError(Exception):
    pass


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off with jitter: try n waits between half and all of ``min(cap, base * 2**n)`` seconds
    (the random half keeps a fleet of cameras from reconnecting in step after an outage)."""
    base: float = 0.25
    cap: float = 8.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(attempt, 30))
        return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


# -- results ---------------------------------------------------------------------------------------------------
class ResultSink:
    """JSON lines, one per answered (or dropped) crop, to stdout or appended to a file (fsync'd per line)."""

    def __init__(self, path: str | Path | None = None):
        self.lock = threading.Lock()
        self.path = None if path is None else Path(path)
        self._fd: int | None = None
        if self.path is not None:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            except OSError as e:
                raise DeliveryError(f"cannot open the results file {self.path}: {e.strerror}") from e
            self._last = self._recover_tail()
        else:
            self._last = None

    def _recover_tail(self) -> dict | None:
        """Cut a line a kill left half-written; return the last whole line as a dict (None if there is none)."""
        size = os.fstat(self._fd).st_size
        tail = os.pread(self._fd, min(size, 1 << 16), max(0, size - (1 << 16)))
        if tail and not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n") + 1
            os.ftruncate(self._fd, size - (len(tail) - cut))
            os.fsync(self._fd)
            tail = tail[:cut]
        lines = tail.splitlines()
        try:
            return json.loads(lines[-1]) if lines else None
        except json.JSONDecodeError:
            return None

    def last_row(self) -> dict | None:
        """The file's last whole line as it was when the sink was opened (None for stdout)."""
        return self._last

    def write(self, row: dict) -> None:
        """Write one line; call with ``lock`` held when the write must not interleave with an acknowledgment."""
        line = (json.dumps(row, ensure_ascii=False) + "\n").encode()
        if self._fd is None:
            sys.stdout.write(line.decode())
            sys.stdout.flush()
            return
        os.write(self._fd, line)
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class Outgoing:
    """One coded crop a producer hands to :meth:`Sender.send`: ``id`` and ``fields`` come back with its answer."""
    id: str
    data: bytes
    source: str = ""
    fields: dict = field(default_factory=dict)
    encode_ms: float | None = None


def dropped_row(outbox: Outbox, d: Dropped) -> dict:
    return {"device_id": outbox.device_id, "sequence": d.sequence, "source": d.source, "bytes": d.bytes,
            "dropped": f"outbox full (at most {outbox.max_frames} crops, {outbox.max_bytes} bytes): oldest dropped"}


def result_row(outbox: Outbox, frame: Frame, resp: pb.RecognizeResponse) -> dict:
    row = {**frame.meta, "device_id": outbox.device_id, "sequence": frame.sequence, "source": frame.source,
           "bytes": len(frame.data), "queued_s": round(time.time() - frame.queued_at, 3),
           "replayed": resp.replayed}
    if resp.WhichOneof("outcome") == "error":
        row["error"] = {"code": pb.Error.Code.Name(resp.error.code), "message": resp.error.message}
    else:
        r = resp.result
        row.update(face_found=r.face_found, identity=r.identity or None, similarity=round(r.similarity, 4),
                   matches=[{"identity": m.identity, "similarity": round(m.similarity, 4)} for m in r.matches],
                   model_id=r.model_id)
    return row


# -- connection ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Connection:
    """Where and how to connect; the token is read again at every connection, so a rotated token is picked up."""
    server: str
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token_file: Path | None = None
    token_env: str | None = None
    tls_server_name: str | None = None  # the name the server's certificate carries, when not the target's host

    def __post_init__(self):
        if (self.tls_cert is None) != (self.tls_key is None):
            raise DeliveryError("a client certificate needs its key and the other way round: give both "
                                "--tls-cert and --tls-key")
        if self.tls_cert is not None and self.tls_ca is None:
            raise DeliveryError("--tls-cert/--tls-key (mTLS) need --tls-ca, the CA that signed the server")
        if self.tls_server_name is not None and self.tls_ca is None:
            raise DeliveryError("--tls-server-name applies to TLS: give --tls-ca too")
        if self.token_file is not None and self.token_env is not None:
            raise DeliveryError("give the token one way: --token-file or --token-env, not both")
        for p in (self.tls_ca, self.tls_cert, self.tls_key):
            if p is not None and not Path(p).is_file():
                raise DeliveryError(f"{p}: no such file")

    def token(self) -> str | None:
        if self.token_file is not None:
            try:
                value = Path(self.token_file).read_text().strip()
            except OSError as e:
                raise DeliveryError(f"cannot read the token file {self.token_file}: {e.strerror}") from e
            where = f"the token file {self.token_file}"
        elif self.token_env is not None:
            value = os.environ.get(self.token_env, "").strip()
            where = f"the environment variable {self.token_env}"
        else:
            return None
        if not value:
            raise DeliveryError(f"{where} is empty")
        return value

    def client(self, timeout: float = 30.0):
        from facelink.edge.client import Client

        secure = {}
        if self.tls_ca is not None:
            secure["tls_ca"] = Path(self.tls_ca)
        if self.tls_cert is not None:
            secure["tls_cert"], secure["tls_key"] = Path(self.tls_cert), Path(self.tls_key)
        if self.tls_server_name is not None:
            secure["server_name"] = self.tls_server_name
        token = self.token()
        if token is not None:
            secure["token"] = token
        return Client(self.server, timeout=timeout, **secure)


class _Servers(argparse.Action):
    """``--server A:1 B:2``: kept as ``"A:1,B:2"``, the client's form for several servers (round robin)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, ",".join(values))


def add_connection_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", nargs="+", action=_Servers, default="127.0.0.1:50051", metavar="HOST:PORT",
                   help="the facelink server; several (replicas on one gallery) share the streams round robin "
                        "(default %(default)s)")
    p.add_argument("--tls-ca", type=Path, help="connect with TLS, trusting the server certificates this CA file "
                                                "(PEM) signed")
    p.add_argument("--tls-cert", type=Path, help="client certificate (PEM) for mutual TLS; needs --tls-key")
    p.add_argument("--tls-key", type=Path, help="private key (PEM) of --tls-cert")
    p.add_argument("--tls-server-name", metavar="NAME",
                   help="the name the server's certificate must carry, when it is not the --server host (an IP "
                        "address, or several servers)")
    p.add_argument("--token-file", type=Path, help="file holding the bearer token the server asks for")
    p.add_argument("--token-env", metavar="VAR", help="environment variable holding the bearer token")


def connection_from_args(args) -> Connection:
    return Connection(args.server, args.tls_ca, args.tls_cert, args.tls_key, args.token_file, args.token_env,
                      args.tls_server_name)


# -- the sender ------------------------------------------------------------------------------------------------
@dataclass
class SendStats:
    answered: int = 0     # answers written (this process)
    replayed: int = 0     # of which the server gave from its store (a resend after a lost answer)
    errors: int = 0       # of which were in-band errors (a bad frame: answered, not retried)
    resent: int = 0       # crops sent again after a broken stream
    reconnects: int = 0
    recovered: int = 0    # crops found answered in the results file at start-up and removed without writing
    fault_retries: int = 0  # INTERNAL answers (a server fault, not the crop's) not taken as the answer: resent


class Sender:
    """Streams an outbox to a server until stopped (or, with ``producer_done`` set, until the outbox is empty)."""

    def __init__(self, outbox: Outbox, connect: Callable[[], object], sink: ResultSink, *, window: int = 16,
                 backoff: Backoff = Backoff(), ack_timeout: float = 60.0, top_k: int = 0,
                 fault_retries: int = 5, log: Callable[[dict], None] | None = None):
        if window < 1 or ack_timeout <= 0:
            raise DeliveryError(f"window must be >= 1 and ack timeout > 0, got {window} and {ack_timeout}")
        self.outbox, self.connect, self.sink = outbox, connect, sink
        self.window, self.backoff, self.ack_timeout, self.top_k = window, backoff, ack_timeout, top_k
        self.log = log or (lambda event: print(json.dumps(event), file=sys.stderr, flush=True))
        self.stats = SendStats()
        self._sent_high = 0  # the highest sequence ever sent by this sender: one at or below it is a resend
        self.fault_retries = fault_retries
        self._faults: dict[int, int] = {}  # sequence -> INTERNAL answers so far
        self._recover()

    # -- as a background thread beside a producer (facelink-edge run) -------------------------------------------
    def start(self) -> Sender:
        """Deliver in a background thread until :meth:`finish` or :meth:`stop`; :attr:`failed` says if it gave up."""
        self._stop, self._done, self.error = threading.Event(), threading.Event(), None

        def body():
            try:
                self.run(self._stop, self._done)
            except Exception as e:  # noqa: BLE001 - surfaced through failed/error/finish
                self.error = e

        self._thread = threading.Thread(target=body, name="facelink-sender", daemon=True)
        self._thread.start()
        return self

    @property
    def failed(self) -> bool:
        return getattr(self, "error", None) is not None

    def send(self, item: Outgoing) -> int | None:
        """Queue a crop durably (it is delivered in the background); returns its sequence number. Crops the
        drop-oldest policy removes to make room are written to the results as ``dropped``."""
        meta = dict(item.fields, id=item.id)
        if item.encode_ms is not None:
            meta["encode_ms"] = round(item.encode_ms, 2)
        seq, dropped = self.outbox.put(item.data, source=item.source, meta=meta)
        if dropped:
            with self.sink.lock:
                for d in dropped:
                    self.sink.write(dropped_row(self.outbox, d))
        return seq

    def finish(self, timeout: float | None = None) -> SendStats:
        """Nothing more will be sent: wait until every queued crop is answered (at most ``timeout`` seconds; what is
        left stays in the outbox for the next start), then stop. Raises the error the sender gave up with."""
        self._done.set()
        self._thread.join(timeout)
        return self.stop()

    def stop(self) -> SendStats:
        """Stop now: the crops on the wire get their answers if they come within a moment; the rest stay queued."""
        self._stop.set()
        self._thread.join()
        if self.error is not None:
            raise self.error if isinstance(self.error, DeliveryError) else DeliveryError(str(self.error))
        return self.stats

    def _recover(self) -> None:
        last = self.sink.last_row()
        if (last and last.get("device_id") == self.outbox.device_id and "dropped" not in last
                and isinstance(last.get("sequence"), int) and self.outbox.ack(last["sequence"])):
            self.stats.recovered += 1

    def drained(self) -> bool:
        return self.outbox.stats().frames == 0

    def run(self, stop: threading.Event, producer_done: threading.Event | None = None) -> SendStats:
        """Deliver until ``stop`` is set, or until ``producer_done`` is set and every queued crop is answered."""
        done = producer_done or threading.Event()
        attempt = 0
        while not stop.is_set() and not (done.is_set() and self.drained()):
            before = self.stats.answered
            client = self.connect()
            try:
                self._stream(client, stop, done)
                error = None
            except grpc.RpcError as e:
                if e.code() in FATAL_CODES:
                    raise DeliveryError(f"the server refuses this client: {e.code().name}: {e.details()}") from e
                error = f"{e.code().name}: {e.details()}"
            finally:
                client.close()
            if self.stats.answered > before:
                attempt = 0
            if error is None and (stop.is_set() or (done.is_set() and self.drained())):
                break
            delay = self.backoff.delay(attempt)
            self.log({"event": "reconnecting", "in_s": round(delay, 3), "attempt": attempt + 1,
                      "waiting": self.outbox.stats().frames, "error": error})
            attempt += 1
            self.stats.reconnects += 1
            stop.wait(delay)
        return self.stats

    def _stream(self, client, stop: threading.Event, done: threading.Event) -> None:
        inflight: dict[str, Frame] = {}
        cond = threading.Condition()
        closed = threading.Event()
        progress = [time.monotonic()]
        failure: list[BaseException] = []
        retry: list[tuple[float, Frame]] = []  # (not before, crop) answered INTERNAL: sent again on this stream

        def requests():
            last = 0
            try:
                while not (stop.is_set() or closed.is_set()):
                    with cond:
                        while len(inflight) >= self.window and not (stop.is_set() or closed.is_set()):
                            cond.wait(0.2)
                        room = self.window - len(inflight)
                        due = [r for r in retry if r[0] <= time.monotonic()][:room]
                        for r in due:
                            retry.remove(r)
                        waiting = bool(retry)
                    if stop.is_set() or closed.is_set():
                        return
                    frames = [f for _, f in due if self.outbox.contains(f.sequence)]
                    if len(frames) < room:
                        frames += self.outbox.pending(after=last, limit=room - len(frames))
                    if not frames:
                        if done.is_set() and not waiting and not self.outbox.pending(after=last, limit=1):
                            return  # everything queued is on the wire: half-close, the server answers the rest
                        self.outbox.wait(last, 0.2)
                        continue
                    for f in frames:
                        with cond:
                            if not inflight:
                                progress[0] = time.monotonic()
                            inflight[str(f.sequence)] = f
                        last = max(last, f.sequence)
                        if f.sequence <= self._sent_high:
                            self.stats.resent += 1
                        self._sent_high = max(self._sent_high, f.sequence)
                        yield pb.RecognizeRequest(id=str(f.sequence), bitstream=f.data, source=f.source,
                                                  top_k=self.top_k, device_id=self.outbox.device_id,
                                                  sequence=f.sequence)
            except Exception as e:  # noqa: BLE001 - reported by the caller, not lost in gRPC's thread
                failure.append(e)  # returning half-closes the stream: the answers owed come, then it ends

        call = client.recognize_stream(requests())

        def watchdog():
            stopped_at = None
            while not closed.wait(0.5):
                now = time.monotonic()
                if stop.is_set() and stopped_at is None:
                    stopped_at = now
                with cond:
                    stalled = inflight and now - progress[0] > self.ack_timeout
                    late = inflight and stopped_at is not None and now - stopped_at > STOP_GRACE_S
                if stalled or late:  # no answer for too long, or stopping and the answers owed do not come
                    self.log({"event": "no_answer", "for_s": round(now - (stopped_at if late else progress[0]), 1),
                              "unanswered": len(inflight)})
                    call.cancel()
                    return

        guard = threading.Thread(target=watchdog, name="facelink-ack-watchdog", daemon=True)
        guard.start()
        try:
            for resp in call:
                with cond:
                    frame = inflight.pop(resp.id, None)
                    progress[0] = time.monotonic()
                    cond.notify_all()
                if frame is None:
                    self.log({"event": "unexpected_answer", "id": resp.id})
                    continue
                faults = self._faults.get(frame.sequence, 0)
                if resp.WhichOneof("outcome") == "error" and resp.error.code == pb.Error.INTERNAL:
                    if faults < self.fault_retries:  # the server's fault, not the crop's: try it again later
                        self._faults[frame.sequence] = faults + 1
                        self.stats.fault_retries += 1
                        self.log({"event": "server_fault", "sequence": frame.sequence, "try": faults + 1,
                                  "message": resp.error.message})
                        with cond:
                            retry.append((time.monotonic() + self.backoff.delay(faults), frame))
                        continue
                self._faults.pop(frame.sequence, None)
                row = result_row(self.outbox, frame, resp)
                with self.sink.lock:  # the line is durable before the crop leaves the outbox
                    self.sink.write(row)
                    self.outbox.ack(frame.sequence)
                self.stats.answered += 1
                self.stats.replayed += resp.replayed
                self.stats.errors += "error" in row
        finally:
            closed.set()
            with cond:
                cond.notify_all()
            guard.join()
        if failure:
            raise DeliveryError(f"reading the outbox failed: {failure[0]}") from failure[0]
        if inflight:  # the server ended the stream without answering everything: resend on a new one
            raise _StreamEnded(len(inflight))


class _StreamEnded(grpc.RpcError):
    """The server closed the stream cleanly with crops unanswered (it is shutting down): resend elsewhere."""

    def __init__(self, unanswered: int):
        super().__init__(f"stream ended with {unanswered} unanswered")
        self._unanswered = unanswered

    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return f"the server ended the stream with {self._unanswered} crop(s) unanswered"


def deliver(outbox: Outbox, connect: Callable[[], object], sink: ResultSink, stop: threading.Event,
            producer_done: threading.Event | None = None, **options) -> SendStats:
    """Run a :class:`Sender` in this thread (see :meth:`Sender.run`); ``options`` are Sender's keyword options."""
    return Sender(outbox, connect, sink, **options).run(stop, producer_done)


# -- facelink-edge send ------------------------------------------------------------------------------------------
def add_outbox_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--outbox", type=Path, default=Path("facelink-outbox.db"),
                   help="the on-device outbox (SQLite; created if absent): crops wait here until answered and "
                        "survive restarts (default facelink-outbox.db)")
    p.add_argument("--device", help="this device's name, sent with every crop (default: the host name; fixed when "
                                    "the outbox is created)")
    p.add_argument("--max-outbox-frames", type=int, default=DEFAULT_MAX_FRAMES,
                   help=f"at most this many crops wait in the outbox; the oldest are dropped, counted and reported "
                        f"(default {DEFAULT_MAX_FRAMES})")
    p.add_argument("--max-outbox-bytes", type=int, default=DEFAULT_MAX_BYTES,
                   help=f"at most this many bytes of crops wait in the outbox (default {DEFAULT_MAX_BYTES})")
    p.add_argument("--results", type=Path, help="append answers to this file as JSON lines (exactly once, also "
                                                "across restarts) instead of printing them")
    p.add_argument("--window", type=int, default=16, help="crops on the wire without an answer yet (default 16)")
    p.add_argument("--backoff-max", type=float, default=Backoff.cap,
                   help=f"longest wait between reconnection attempts, seconds (default {Backoff.cap:g})")
    p.add_argument("--ack-timeout", type=float, default=60.0,
                   help="reconnect when crops wait this many seconds without an answer (default 60)")
    p.add_argument("--top-k", type=int, default=0, help="best gallery matches per answer (0: the server's default)")


def _crop_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(q for q in p.rglob("*.flk") if q.is_file())
        elif p.is_file():
            if p.suffix != ".flk":
                raise DeliveryError(f"{p}: send takes coded crops (.flk files, made by facelink-edge encode); "
                                    "use run for images and video")
            files.append(p)
        else:
            raise DeliveryError(f"{p}: no such file or folder")
    if not files:
        raise DeliveryError(f"no .flk files in {' '.join(paths)}")
    return files


def queue_files(outbox: Outbox, sink: ResultSink, files: list[Path], stop: threading.Event) -> dict:
    """Queue coded crop files, each once per outbox (by path and content: a restarted send does not queue a file
    twice); a file that is not a readable facelink container is reported and skipped."""
    counts = {"queued": 0, "already_queued": 0, "skipped": 0, "dropped": 0}
    for f in files:
        if stop.is_set():
            break
        try:
            data = f.read_bytes()
            bitstream.unpack(data)
        except (OSError, bitstream.BitstreamError, ValueError) as e:
            counts["skipped"] += 1
            with sink.lock:
                sink.write({"source": str(f), "skipped": str(e)})
            continue
        key = f"{f.resolve()}:{hashlib.sha256(data).hexdigest()}"
        seq, dropped = outbox.put(data, source=str(f), key=key)
        counts["queued" if seq is not None else "already_queued"] += 1
        if dropped:
            counts["dropped"] += len(dropped)
            with sink.lock:
                for d in dropped:
                    sink.write(dropped_row(outbox, d))
    return counts


def cmd_send(args) -> int:
    files = _crop_files(args.paths)
    connection = connection_from_args(args)
    with Outbox(args.outbox, device=args.device, max_frames=args.max_outbox_frames,
                max_bytes=args.max_outbox_bytes) as outbox:
        sink = ResultSink(args.results)
        stop, queued = threading.Event(), threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        counts: dict = {}

        def produce():
            try:
                counts.update(queue_files(outbox, sink, files, stop))
            finally:
                queued.set()

        producer = threading.Thread(target=produce, name="facelink-queue", daemon=True)
        producer.start()
        try:
            sender = Sender(outbox, connection.client, sink, window=args.window, backoff=Backoff(cap=args.backoff_max),
                            ack_timeout=args.ack_timeout, top_k=args.top_k)
            stats = sender.run(stop, queued)
        finally:
            stop.set()
            producer.join()
            sink.close()
        left = outbox.stats()
        print(json.dumps({"event": "summary", "device_id": outbox.device_id, "files": len(files), **counts,
                          **stats.__dict__, "outbox": left.as_dict()}), file=sys.stderr, flush=True)
    return 0 if left.frames == 0 else 1


def add_send_parser(sub) -> argparse.ArgumentParser:
    """``facelink-edge send``: register the sub-command on an argparse sub-parsers object."""
    p = sub.add_parser("send", help="deliver coded crops (.flk) through the outbox, exactly once, resuming after "
                                    "restarts and outages")
    p.add_argument("paths", nargs="+", help=".flk files or folders of them")
    add_connection_arguments(p)
    add_outbox_arguments(p)
    p.set_defaults(func=cmd_send)
    return p
