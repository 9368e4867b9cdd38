"""Fuzzing of the container parser and the entropy decoder: what the server runs on every frame before synthesis.

  python -m facelink.benchmarks.fuzz_containers --iterations 1000000 [--seconds S] [--seed 0]
      [--out benchmarks/results/fuzz.json]

Each iteration builds one hostile container from a seeded random generator (so a run is reproducible) by one of
these strategies, then checks it with :func:`check_container`:

- ``random``: random bytes, sometimes behind the magic and a version byte;
- ``header``: a valid container with its header (version, template id, model id, size fields) mutated, the CRC
  recomputed or not;
- ``payload``: a valid container with its rANS stream mutated (bit flips, bytes set, inserted, deleted,
  duplicated, truncated), the CRC recomputed so the damage reaches the entropy decoder;
- ``splice``: the head of one valid container joined to the tail of another, CRC recomputed;
- ``model``: a valid container relabelled with another served model's id (the wrong tables), CRC recomputed;
- ``synth``: a well-formed container of a random size, template, version (every readable one; a quality for
  version 3) and model with a random payload.

The property: the parser and decoder either accept the bytes, and then the container re-packs to the same bytes
and decodes to a finite latent of its model's shape, or refuse them with ``BitstreamError``. Anything else
(another exception, a wrong shape, a non-finite value, a non-canonical container) is a crash; crashes are kept
in the result with the container's bytes (hex) and the exception. A container whose padded image exceeds
``--max-pixels`` is parsed but not entropy-decoded, as a server with that pixel budget would refuse it.

Seeds are the golden containers in tests/golden (both versions, a crop and a full frame). The result document
(iterations, crashes, seconds, what each strategy reached) is rewritten every ``--checkpoint`` seconds, so a
long run that is stopped still reports what it did.
"""
from __future__ import annotations

import argparse
import json
import random
import struct
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facelink.cloud.evaluation.provenance import stamp
from facelink.shared import bitstream, codec, registry
from facelink.shared.alignment import TEMPLATE_IDS
from facelink.shared.paths import REPO_ROOT
from facelink.shared.tables import ModelTables

DEFAULT_OUT = Path("benchmarks/results/fuzz.json")
GOLDEN_DIR = (REPO_ROOT or Path.cwd()) / "tests" / "golden"
DEFAULT_MAX_PIXELS = 1024 * 1024
STRATEGIES = {"random": 30, "header": 25, "payload": 25, "splice": 8, "model": 4, "synth": 8}
MAX_KEPT_CRASHES = 20


class FuzzCrash(AssertionError):
    """The parser or decoder broke the property on one container."""


def load_tables() -> dict[str, ModelTables]:
    """Every registry model's tables by model id (the first model of each id, as the server's decoder keys them)."""
    out: dict[str, ModelTables] = {}
    for name in registry.available():
        bundle = registry.load(name)
        out.setdefault(bundle.model_id, bundle.tables)
    return out


def golden_seeds(folder: Path = GOLDEN_DIR) -> list[bytes]:
    seeds = [p.read_bytes() for p in sorted(folder.glob("*.flk"))]
    if not seeds:
        raise FileNotFoundError(f"no .flk seed containers in {folder}")
    return seeds


def check_container(data: bytes, tables: dict[str, ModelTables], max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """Run the server's pre-synthesis path on ``data``; return the outcome or raise :class:`FuzzCrash`.

    Outcomes: ``refused_parse``, ``unknown_model``, ``over_pixel_budget``, ``refused_decode``, ``decoded``."""
    try:
        frame = bitstream.unpack(data)
    except bitstream.BitstreamError:
        return "refused_parse"
    except Exception as e:  # noqa: BLE001 - the property under test
        raise FuzzCrash(f"unpack raised {type(e).__name__}: {e}") from e
    try:
        repacked = bitstream.pack(frame)
    except Exception as e:  # noqa: BLE001
        raise FuzzCrash(f"an accepted container does not re-pack: {type(e).__name__}: {e}") from e
    if repacked != bytes(data):
        raise FuzzCrash("an accepted container is not canonical: it re-packs to other bytes")
    t = tables.get(frame.model_id)
    if t is None:
        return "unknown_model"
    ph, pw = frame.padded_shape
    if ph * pw > max_pixels:
        return "over_pixel_budget"
    try:
        y_hat = codec.decompress_latents(t, frame)
    except bitstream.BitstreamError:
        return "refused_decode"
    except Exception as e:  # noqa: BLE001
        raise FuzzCrash(f"decoding raised {type(e).__name__}: {e}") from e
    if y_hat.shape != (t.M, *frame.y_shape) or y_hat.dtype != np.float32 or not np.all(np.isfinite(y_hat)):
        raise FuzzCrash(f"decoded latent of shape {y_hat.shape} {y_hat.dtype}, finite: {np.all(np.isfinite(y_hat))}")
    return "decoded"


def with_crc(body: bytes) -> bytes:
    """``body`` followed by its CRC32, as a container ends."""
    return body + struct.pack("<I", zlib.crc32(body))


_INTERESTING = (0x00, 0x01, 0x02, 0x7F, 0x80, 0xFE, 0xFF)


def mutate(data: bytes, rng: random.Random, lo: int = 0, hi: int | None = None, ops: int = 0) -> bytes:
    """Apply 1–4 (or ``ops``) random edits to ``data`` at positions in [lo, hi)."""
    buf = bytearray(data)
    for _ in range(ops or rng.randint(1, 4)):
        top = min(len(buf), hi if hi is not None else len(buf))
        if top <= lo:
            buf += bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            continue
        i = rng.randrange(lo, top)
        op = rng.randrange(8)
        if op == 0:
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[i] = rng.randrange(256)
        elif op == 2:
            buf[i] = rng.choice(_INTERESTING)
        elif op == 3:
            buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 4:
            del buf[i : i + rng.randint(1, 16)]
        elif op == 5:
            j = rng.randrange(i, top)
            buf[j:j] = buf[i : i + rng.randint(1, 32)]
        elif op == 6:
            del buf[i:]
        else:
            buf += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    return bytes(buf)


def _payload_start(data: bytes) -> int:
    """Where the rANS stream(s) begin in a valid container."""
    frame = bitstream.unpack(data)
    return len(data) - 4 - sum(len(s) for s in frame.streams)


@dataclass
class Generator:
    """Builds fuzzed containers, one strategy at a time, from seed containers and the served model ids."""

    seeds: list[bytes]
    model_ids: list[str]
    rng: random.Random
    _starts: list[int] = field(init=False)

    def __post_init__(self):
        self._starts = [_payload_start(s) for s in self.seeds]

    def make(self, strategy: str) -> bytes:
        rng = self.rng
        k = rng.randrange(len(self.seeds))
        seed, start = self.seeds[k], self._starts[k]
        if strategy == "random":
            body = bytes(rng.randrange(256) for _ in range(rng.randint(0, 48)))
            if rng.random() < 0.7:
                body = bitstream.MAGIC + bytes([rng.choice((1, 2, 2, 3, 0, 255))]) + body
            return with_crc(body) if rng.random() < 0.5 else body
        if strategy == "header":
            out = mutate(seed, rng, 0, start + 2)
            return with_crc(out[:-4]) if rng.random() < 0.8 and len(out) >= 4 else out
        if strategy == "payload":
            return with_crc(mutate(seed[:-4], rng, start))
        if strategy == "splice":
            other = self.seeds[rng.randrange(len(self.seeds))]
            cut_a, cut_b = rng.randrange(len(seed) - 4), rng.randrange(len(other) - 4)
            return with_crc(seed[:cut_a] + other[cut_b:-4])
        if strategy == "model":
            version_1 = seed[3] == 1
            at = 6 if version_1 else 5
            mid = bytes.fromhex(rng.choice(self.model_ids))
            return with_crc(seed[:at] + mid + seed[at + 8 : -4])
        if strategy == "synth":
            return self._synth()
        raise ValueError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")

    def _synth(self) -> bytes:
        rng = self.rng
        version = rng.choice(bitstream.READABLE_VERSIONS + (bitstream.FORMAT_VERSION,))
        template_id = rng.choice([0, 0, *TEMPLATE_IDS]) if version > 1 else rng.choice((0, 1))
        if template_id and version > 1:
            h, w = bitstream.template_size(template_id)
        else:
            h, w = rng.choice(((112, 112), (250, 250), (1, 1), (64, 65), (rng.randint(1, 400), rng.randint(1, 400))))
        mid = rng.choice(self.model_ids) if rng.random() < 0.9 else f"{rng.getrandbits(64):016x}"

        def stream() -> bytes:
            n = rng.choice((0, 4, 8, 12, rng.randrange(8, 2048, 4), rng.randrange(0, 2048)))
            return bytes(rng.randrange(256) for _ in range(n))

        streams = (stream(), stream()) if version == 1 else (stream(),)
        if version > 1 and not streams[0]:
            streams = (b"\0" * 8,)
        quality = rng.randrange(0x10000) / bitstream.QUALITY_SCALE if version == 3 else None
        return bitstream.pack(bitstream.Frame(mid, h, w, streams, template_id, version, quality))


@dataclass
class Run:
    """Counts of one fuzzing run."""

    iterations: int = 0
    crashes: list[dict] = field(default_factory=list)
    crash_count: int = 0
    outcomes: dict[str, Counter] = field(default_factory=dict)

    def record(self, strategy: str, outcome: str) -> None:
        self.iterations += 1
        self.outcomes.setdefault(strategy, Counter())[outcome] += 1


def fuzz(iterations: int, seed: int = 0, seconds: float | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
         on_progress=None, progress_every: float = 60.0) -> tuple[Run, float]:
    """Fuzz up to ``iterations`` containers (or until ``seconds`` pass); returns the counts and the time taken."""
    tables = load_tables()
    gen = Generator(golden_seeds(), sorted(tables), random.Random(seed))
    names, weights = list(STRATEGIES), list(STRATEGIES.values())
    run = Run()
    t0 = last = time.perf_counter()
    for _ in range(iterations):
        strategy = gen.rng.choices(names, weights)[0]
        data = gen.make(strategy)
        try:
            outcome = check_container(data, tables, max_pixels)
        except FuzzCrash as e:
            outcome = "crash"
            run.crash_count += 1
            if len(run.crashes) < MAX_KEPT_CRASHES:
                run.crashes.append({"strategy": strategy, "error": str(e), "container_hex": data[:4096].hex(),
                                    "bytes": len(data)})
        run.record(strategy, outcome)
        now = time.perf_counter()
        if seconds is not None and now - t0 >= seconds:
            break
        if on_progress and now - last >= progress_every:
            last = now
            on_progress(run, now - t0)
    return run, time.perf_counter() - t0


def result_document(run: Run, elapsed: float, args: argparse.Namespace, argv: list[str], finished: bool,
                    provenance: dict) -> dict:
    """The result JSON; ``provenance`` is taken when the run starts (the code fuzzed is the code loaded then)."""
    return dict({
        "command": "python -m facelink.benchmarks.fuzz_containers " + " ".join(argv),
        "finished": finished,
        "iterations": run.iterations,
        "crashes": run.crash_count,
        "seconds": round(elapsed, 1),
        "containers_per_second": round(run.iterations / elapsed, 1) if elapsed > 0 else None,
        "seed": args.seed,
        "max_pixels": args.max_pixels,
        "strategy_weights": STRATEGIES,
        "outcomes_by_strategy": {s: dict(sorted(c.items())) for s, c in sorted(run.outcomes.items())},
        "crash_samples": run.crashes,
    }, provenance=provenance)


def _write(doc: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m facelink.benchmarks.fuzz_containers",
                                 description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=1_000_000, help="containers to fuzz (default 1,000,000)")
    ap.add_argument("--seconds", type=float, help="stop after this many seconds even if iterations remain")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random generator (a run is reproducible)")
    ap.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                    help="padded image area above which a container is parsed but not entropy-decoded")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"result JSON (default {DEFAULT_OUT})")
    ap.add_argument("--checkpoint", type=float, default=60.0, help="seconds between rewrites of the result JSON")
    args = ap.parse_args(argv)
    if args.iterations < 1:
        ap.error("--iterations must be at least 1")

    provenance = stamp({})["provenance"]

    def progress(run: Run, elapsed: float) -> None:
        _write(result_document(run, elapsed, args, argv, False, provenance), args.out)
        print(f"{run.iterations} containers, {run.crash_count} crashes, {elapsed:.0f} s", file=sys.stderr, flush=True)

    run, elapsed = fuzz(args.iterations, args.seed, args.seconds, args.max_pixels, progress, args.checkpoint)
    doc = result_document(run, elapsed, args, argv, True, provenance)
    _write(doc, args.out)
    print(json.dumps({k: doc[k] for k in ("iterations", "crashes", "seconds", "containers_per_second")}))
    return 1 if run.crash_count else 0


if __name__ == "__main__":
    raise SystemExit(main())
