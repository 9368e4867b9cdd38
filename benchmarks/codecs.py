"""Codecs measured by the benchmark, behind one interface.

Every codec maps an RGB uint8 H×W×3 image and a quality setting to a byte string and back. The number of
bits a codec is charged for is :meth:`Codec.bits`; the default is every byte it produced (the whole file or
container, headers included). The one exception is HEVC, which is charged for its raw Annex-B elementary
stream (VPS, SPS, PPS and slice data; x265's settings SEI is switched off), as the IPR paper counts it.

Adding a codec is one entry in :data:`REGISTRY` (a name and a factory). facelink's learned codecs plug in as
``FacelinkCodec`` (``facelink.cloud.evaluation.codec.LearnedCodec`` behind a lazy import).
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, features


class CodecUnavailable(RuntimeError):
    """A codec's library or binary is not installed; the message says how to get it."""


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if not (isinstance(rgb, np.ndarray) and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8):
        raise ValueError(f"expected an H×W×3 uint8 RGB array, got {getattr(rgb, 'shape', None)} "
                         f"{getattr(rgb, 'dtype', None)}")
    return np.ascontiguousarray(rgb)


class Codec:
    """One codec and its quality sweep.

    Subclasses set ``name`` (registry key), ``label`` (for plots), ``quality_name`` (what the sweep's numbers
    mean: ``q``, ``crf``, ...), ``qualities`` (the default sweep, ordered from lowest to highest rate) and
    implement :meth:`encode` / :meth:`decode`.
    """

    name: str = ""
    label: str = ""
    quality_name: str = "q"
    qualities: tuple = ()

    def encode(self, rgb: np.ndarray, quality) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    def decode(self, data: bytes) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def bits(self, data: bytes) -> int:
        """Bits charged for ``data`` (default: all of it)."""
        return 8 * len(data)

    def settings(self) -> dict:
        """Fixed encoder settings (besides the quality): part of the cache key and of the provenance."""
        return {}

    def settings_for(self, quality) -> dict:
        """What, besides ``quality``, decides the output of one setting: its cache key (default: ``settings()``)."""
        return self.settings()

    def version(self) -> str:
        """Library version string, for provenance."""
        return ""

    def check_available(self) -> None:
        """Raise :class:`CodecUnavailable` with a helpful message if this codec cannot run here."""

    def encode_many(self, images: Sequence[np.ndarray], quality) -> list[bytes]:
        """Encode several images at one setting; same bytes as :meth:`encode` on each (codecs may batch)."""
        return [self.encode(im, quality) for im in images]

    def encode_crops(self, crops: Sequence[np.ndarray], quality, template: str) -> list[bytes]:
        """Encode face crops aligned to ``template`` (a :data:`facelink.shared.alignment.TEMPLATES` name). A codec
        whose bitstream can say so does, as the edge sends a crop (facelink's container); the default codes them as
        any other images."""
        return self.encode_many(crops, quality)

    def decode_many(self, datas: Sequence[bytes]) -> list[np.ndarray]:
        """Decode several byte strings; same images as :meth:`decode` on each (codecs may batch)."""
        return [self.decode(d) for d in datas]

    def for_domain(self, domain: str) -> Codec:
        """This codec for probes of a capture domain: itself, except where a decoder is told the probes' domain
        (the face-domain adapters' oracle)."""
        return self

    def roundtrip(self, rgb: np.ndarray, quality) -> tuple[np.ndarray, int]:
        """Encode and decode; returns the decoded image and the bits charged."""
        data = self.encode(_check_rgb(rgb), quality)
        out = self.decode(data)
        if out.shape != rgb.shape:
            raise RuntimeError(f"{self.name}: decoded shape {out.shape} differs from input {rgb.shape}")
        return out, self.bits(data)

    def quality_label(self, quality) -> str:
        return f"{self.quality_name}={quality}"


# ----------------------------------------------------------------------------------------------------------
class Uncompressed(Codec):
    """The reference: 8-bit RGB, 24 bpp. The byte string carries a 4-byte size header that is not charged."""

    name, label, quality_name, qualities = "uncompressed", "Uncompressed", "raw", ("rgb24",)
    _HDR = struct.Struct(">HH")

    def encode(self, rgb, quality="rgb24"):
        rgb = _check_rgb(rgb)
        return self._HDR.pack(rgb.shape[0], rgb.shape[1]) + rgb.tobytes()

    def decode(self, data):
        h, w = self._HDR.unpack_from(data)
        return np.frombuffer(data, np.uint8, offset=self._HDR.size).reshape(h, w, 3).copy()

    def bits(self, data):
        return 8 * (len(data) - self._HDR.size)

    def roundtrip(self, rgb, quality="rgb24"):
        rgb = _check_rgb(rgb)
        return rgb.copy(), 24 * rgb.shape[0] * rgb.shape[1]

    def version(self):
        return "n/a"


class _PillowCodec(Codec):
    fmt: str = ""
    feature: str = ""

    def _save_kwargs(self, quality) -> dict:
        raise NotImplementedError

    def check_available(self):
        if self.feature and not features.check(self.feature):
            raise CodecUnavailable(f"Pillow was built without {self.feature}; install a Pillow wheel with it")

    def encode(self, rgb, quality):
        buf = io.BytesIO()
        Image.fromarray(_check_rgb(rgb), "RGB").save(buf, format=self.fmt, **self._save_kwargs(quality))
        return buf.getvalue()

    def decode(self, data):
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB")).copy()

    def version(self):
        return f"Pillow {Image.__version__}, lib {features.version(self.feature) if self.feature else '?'}"


class JPEG(_PillowCodec):
    """Baseline JPEG through Pillow's libjpeg: 4:2:0, standard quant tables scaled by quality, optimised
    Huffman tables; charged for the whole JFIF file."""

    name, label, fmt, feature = "jpeg", "JPEG", "JPEG", "jpg"
    qualities = (2, 5, 10, 20, 40, 75)

    def _save_kwargs(self, quality):
        return {"quality": int(quality), "subsampling": "4:2:0", "optimize": True}

    def settings(self):
        return {"subsampling": "4:2:0", "optimize": True}


class WebP(_PillowCodec):
    """Lossy WebP (VP8 intra) through Pillow's libwebp, method 6; charged for the whole RIFF file."""

    name, label, fmt, feature = "webp", "WebP", "WEBP", "webp"
    qualities = (0, 5, 15, 30, 50, 80)
    method = 6

    def _save_kwargs(self, quality):
        return {"quality": int(quality), "method": self.method, "lossless": False}

    def settings(self):
        return {"method": self.method}


class AVIF(_PillowCodec):
    """AVIF (AV1 intra, 4:2:0) through Pillow's libavif with libaom, speed 6; charged for the whole HEIF file."""

    name, label, fmt, feature = "avif", "AVIF", "AVIF", "avif"
    qualities = (0, 10, 25, 40, 55, 70)
    speed = 6

    def _save_kwargs(self, quality):
        return {"quality": int(quality), "speed": self.speed, "subsampling": "4:2:0", "max_threads": 1}

    def settings(self):
        return {"speed": self.speed, "subsampling": "4:2:0"}


class JPEGXL(_PillowCodec):
    """JPEG XL (VarDCT) through pillow-jxl-plugin's libjxl, effort 7, bare codestream (no ISOBMFF container)."""

    name, label, fmt, feature = "jxl", "JPEG XL", "JXL", ""
    qualities = (0, 10, 25, 45, 65, 85)
    effort = 7

    def check_available(self):
        try:
            import pillow_jxl  # noqa: F401  (registers the JXL format with Pillow)
        except ImportError as e:
            raise CodecUnavailable("JPEG XL needs pillow-jxl-plugin: pip install 'facelink[bench]'") from e

    def encode(self, rgb, quality):
        self.check_available()
        return super().encode(rgb, quality)

    def decode(self, data):
        self.check_available()
        return super().decode(data)

    def _save_kwargs(self, quality):
        return {"quality": int(quality), "effort": self.effort, "use_container": False, "num_threads": 1,
                "lossless": False}

    def settings(self):
        return {"effort": self.effort, "container": False}

    def version(self):
        try:
            from importlib.metadata import version
            return f"pillow-jxl-plugin {version('pillow-jxl-plugin')}"
        except Exception:  # noqa: BLE001
            return "pillow-jxl-plugin ?"


# ----------------------------------------------------------------------------------------------------------
def _scratch_dir() -> str | None:
    """A RAM-backed folder for ffmpeg's per-batch files where there is one (Linux /dev/shm), else the default."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def ffmpeg_binary() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise CodecUnavailable("HEVC needs the ffmpeg binary with libx265 (Debian: apt-get install ffmpeg)")
    return path


@cache
def _x265_version(ffmpeg: str) -> str:
    """x265's version as it reports itself on one tiny encode (``x265 [info]: HEVC encoder version ...``)."""
    try:
        r = subprocess.run([ffmpeg, "-hide_banner", "-f", "rawvideo", "-pix_fmt", "gray", "-s", "16x16", "-i", "-",
                            "-frames:v", "1", "-c:v", "libx265", "-f", "hevc", "-"],
                           input=bytes(256), capture_output=True, timeout=60)
        m = re.search(rb"HEVC encoder version (\S+)", r.stderr)
        ff = subprocess.run([ffmpeg, "-version"], capture_output=True, timeout=60).stdout.split(b"\n")[0]
        return f"{ff.decode(errors='replace')}; x265 {m.group(1).decode() if m else '?'}"
    except (OSError, subprocess.SubprocessError):
        return "?"


class HEVC(Codec):
    """HEVC still image: ffmpeg + libx265, one intra frame, 8-bit 4:2:0 (BT.601 limited range, swscale's
    default both ways), preset medium, constant rate factor sweep. Piped: rawvideo in, Annex-B elementary stream
    out; decoded by ffmpeg's native HEVC decoder. Charged for the elementary stream (parameter sets + slice;
    ``info=0`` removes x265's ~2 KB settings SEI). Odd sizes are padded by edge replication to even and the
    padding cropped after decoding; bpp is still over the original pixels.
    """

    name, label, quality_name = "hevc", "HEVC (x265)", "crf"
    qualities = (48, 43, 38, 33, 28, 23)  # low rate first; CRF 23 is the parity reference
    preset = "medium"
    x265_params = "info=0:log-level=error"

    def check_available(self):
        ff = ffmpeg_binary()
        r = subprocess.run([ff, "-hide_banner", "-encoders"], capture_output=True, timeout=60)
        if b"libx265" not in r.stdout:
            raise CodecUnavailable(f"{ff} was built without libx265")

    _TRAILER = struct.Struct(">HH")  # not charged: the unpadded size, so decode can crop the padding

    @staticmethod
    def _padded(rgb: np.ndarray) -> np.ndarray:
        rgb = _check_rgb(rgb)
        h, w = rgb.shape[:2]
        if (h & 1) or (w & 1):
            rgb = np.pad(rgb, ((0, h & 1), (0, w & 1), (0, 0)), mode="edge")
        return rgb

    def _encoder_args(self, quality) -> list[str]:
        return ["-frames:v", "1", "-c:v", "libx265", "-preset", self.preset, "-crf", str(quality),
                "-pix_fmt", "yuv420p", "-x265-params", self.x265_params, "-f", "hevc"]

    def encode(self, rgb, quality):
        h, w = _check_rgb(rgb).shape[:2]
        padded = self._padded(rgb)
        cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", "error",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{padded.shape[1]}x{padded.shape[0]}", "-i", "-",
               *self._encoder_args(quality), "-"]
        r = subprocess.run(cmd, input=padded.tobytes(), capture_output=True)
        if r.returncode != 0 or not r.stdout:
            raise RuntimeError(f"ffmpeg/x265 failed ({r.returncode}): {r.stderr.decode(errors='replace')[-500:]}")
        return r.stdout + self._TRAILER.pack(h, w)

    def encode_many(self, images, quality):
        """One ffmpeg process, one x265 encoder per image (N inputs mapped to N outputs): the same bytes as
        :meth:`encode` image by image (tests/test_bench_codecs.py checks it), without a process start per
        image."""
        images = [_check_rgb(im) for im in images]
        if len(images) <= 1:
            return [self.encode(im, quality) for im in images]
        with tempfile.TemporaryDirectory(prefix="facelink-hevc-", dir=_scratch_dir()) as d:
            cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", "error"]
            for i, im in enumerate(images):
                padded = self._padded(im)
                (Path(d) / f"{i}.rgb").write_bytes(padded.tobytes())
                cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{padded.shape[1]}x{padded.shape[0]}",
                        "-i", str(Path(d) / f"{i}.rgb")]
            for i in range(len(images)):
                cmd += ["-map", f"{i}:v", *self._encoder_args(quality), str(Path(d) / f"{i}.hevc")]
            r = subprocess.run(cmd, capture_output=True)
            outs = [Path(d) / f"{i}.hevc" for i in range(len(images))]
            if r.returncode != 0 or not all(o.exists() and o.stat().st_size for o in outs):
                raise RuntimeError(f"ffmpeg/x265 failed ({r.returncode}): {r.stderr.decode(errors='replace')[-500:]}")
            return [o.read_bytes() + self._TRAILER.pack(*im.shape[:2]) for o, im in zip(outs, images)]

    def bits(self, data):
        return 8 * (len(data) - self._TRAILER.size)

    def elementary_stream(self, data: bytes) -> bytes:
        return data[:-self._TRAILER.size]

    def _unpack(self, data: bytes) -> tuple[bytes, int, int]:
        if len(data) <= self._TRAILER.size:
            raise ValueError(f"not a facelink HEVC string: {len(data)} bytes")
        h, w = self._TRAILER.unpack(data[-self._TRAILER.size:])
        return data[:-self._TRAILER.size], h, w

    @staticmethod
    def _decoder_args() -> list[str]:
        return ["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24"]

    @staticmethod
    def _cropped(r: subprocess.CompletedProcess, raw: bytes, h: int, w: int, what: str = "") -> np.ndarray:
        """ffmpeg's raw RGB output of the padded frame → the h×w image; a clear error for a failed decode."""
        ph, pw = h + (h & 1), w + (w & 1)
        if r.returncode != 0 or len(raw) != ph * pw * 3:
            raise RuntimeError(f"ffmpeg HEVC decode failed ({r.returncode}, {what}{len(raw)} bytes): "
                               f"{r.stderr.decode(errors='replace')[-500:]}")
        return np.frombuffer(raw, np.uint8).reshape(ph, pw, 3)[:h, :w].copy()

    def decode(self, data):
        stream, h, w = self._unpack(data)
        cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "hevc", "-i", "-",
               *self._decoder_args(), "-"]
        r = subprocess.run(cmd, input=stream, capture_output=True)
        return self._cropped(r, r.stdout, h, w)

    def decode_many(self, datas):
        """One ffmpeg process decodes every stream (N inputs to N outputs); same images as :meth:`decode`."""
        if len(datas) <= 1:
            return [self.decode(d) for d in datas]
        parts = [self._unpack(d) for d in datas]
        with tempfile.TemporaryDirectory(prefix="facelink-hevc-", dir=_scratch_dir()) as d:
            cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", "error"]
            for i, (stream, _, _) in enumerate(parts):
                (Path(d) / f"{i}.hevc").write_bytes(stream)
                cmd += ["-f", "hevc", "-i", str(Path(d) / f"{i}.hevc")]
            for i in range(len(parts)):
                cmd += ["-map", f"{i}:v", *self._decoder_args(), str(Path(d) / f"{i}.rgb")]
            r = subprocess.run(cmd, capture_output=True)
            outs = [Path(d) / f"{i}.rgb" for i in range(len(parts))]
            return [self._cropped(r, f.read_bytes() if f.exists() else b"", h, w, f"image {i}: ")
                    for i, (f, (_, h, w)) in enumerate(zip(outs, parts))]

    def settings(self):
        return {"preset": self.preset, "pix_fmt": "yuv420p", "x265-params": self.x265_params,
                "bits": "Annex-B elementary stream"}

    def version(self):
        return _x265_version(ffmpeg_binary())


# ----------------------------------------------------------------------------------------------------------
class FacelinkCodec(Codec):
    """facelink's learned codec: ``facelink.cloud.evaluation.codec.LearnedCodec(model)``; charged for the whole
    container.

    The learned codec has one rate per model, so the "quality" sweep is a list of model names.
    """

    quality_name = "model"

    def __init__(self, models: Sequence[str] = (), name: str = "facelink", label: str = "facelink (learned)"):
        self.name, self.label, self.qualities = name, label, tuple(models)
        self._loaded: dict = {}

    adapters = "off"  # the rate points' face-domain adapters: off (the base decoder), on, ablation
    domain: str | None = None  # decode with this domain's adapter alone (the oracle)

    def _codec(self, model: str):
        if model not in self._loaded:
            try:
                from facelink.cloud.evaluation.codec import LearnedCodec
            except ImportError as e:
                raise CodecUnavailable(
                    "facelink's learned codec is not available "
                    "(facelink.cloud.evaluation.codec.LearnedCodec could not be "
                    f"imported: {e}); install facelink[cloud] from a checkout that has it"
                ) from e
            self._loaded[model] = LearnedCodec(model, adapters=self.adapters)
        return self._loaded[model]

    def check_available(self):
        if not self.qualities:
            raise CodecUnavailable(
                "no learned-codec models configured: give them as facelink:<model>,<model>,... "
                "or in the codecs.REGISTRY entry"
            )
        self._codec(str(self.qualities[0]))

    def encode(self, rgb, quality):
        return self._codec(str(quality)).encode(_check_rgb(rgb))

    def encode_crops(self, crops, quality, template):
        from facelink.shared.alignment import TEMPLATES

        return [self._codec(str(quality)).encode(_check_rgb(c), TEMPLATES[template]) for c in crops]

    def decode(self, data):
        # The container names its model's id: decode with the rate point of this family that has it, found by
        # its manifest, so no other rate point's sessions are loaded on the way.
        from facelink.shared import bitstream, registry

        model_id = bitstream.unpack(data).model_id
        quality = next(
            (q for q in self.qualities if registry.load(str(q), verify=False).manifest["model_id"] == model_id), None
        )
        if quality is None:
            raise ValueError(
                f"not a {self.name} container: its model id {model_id} is none of {', '.join(map(str, self.qualities))}"
            )
        return np.asarray(self._codec(str(quality)).decode(data, self.domain), dtype=np.uint8)

    def roundtrip(self, rgb, quality):
        codec = self._codec(str(quality))
        data = codec.encode(_check_rgb(rgb))
        out = np.asarray(codec.decode(data, self.domain), dtype=np.uint8)
        return out, self.bits(data)

    def settings(self):
        return {"models": {str(q): _model_digest(str(q)) for q in self.qualities}}

    def settings_for(self, quality):
        # The rate point's own artifacts (a digest of its manifest's sha256s): re-exporting a model under the same
        # name is a different setting, never a stale cache hit; adding a rate point to the family changes nothing.
        # The container format the edge writes is part of it too: a new version codes the same image in other bytes.
        return {"model_digest": _model_digest(str(quality)), "format_version": _format_version(str(quality))}

    def version(self):
        try:
            from importlib.metadata import version

            return f"facelink {version('facelink')}"
        except Exception:  # noqa: BLE001
            return "facelink ?"


def _format_version(name: str) -> int:
    """The container version model ``name`` writes: its own (a rate point version 2, a variable-rate model 3)."""
    from facelink.shared import bitstream, registry

    try:
        vr = registry.load(name, verify=False).tables.variable_rate
    except Exception:  # noqa: BLE001 - an unknown model is reported by check_available, not here
        vr = False
    return bitstream.VARIABLE_RATE_VERSION if vr else bitstream.FORMAT_VERSION


def _model_digest(name: str) -> str | None:
    import hashlib

    from facelink.shared import registry

    try:
        bundle = registry.load(name, verify=False)
    except Exception:  # noqa: BLE001 - an unknown model is reported by check_available, not here
        return None
    # Without the decoder-only adapter files: adding adapters to a rate point changes neither its bytes nor its
    # base decoder, so its cached results stay valid.
    files = {k: v for k, v in bundle.manifest["files"].items() if k not in bundle.adapter_files}
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]


def _adapters_digest(name: str) -> str | None:
    import hashlib

    from facelink.shared import registry

    try:
        bundle = registry.load(name, verify=False)
    except Exception:  # noqa: BLE001 - an unknown model is reported by check_available, not here
        return None
    files = {k: bundle.manifest["files"][k] for k in bundle.adapter_files}
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16] if files else None


class AdaptedFacelinkCodec(FacelinkCodec):
    """A learned family decoded with its rate points' face-domain adapters, ``<family>@<variant>``: ``base`` the
    base g_s, ``adapters`` the adapters blended by their gate, ``oracle`` the probes' true domain's adapter alone,
    ``pixel`` the α = 0 (pixel-loss) adapters with their gate. The encoder, hence every byte, is the family's own:
    the variants decode the same bytes."""

    SEP = "@"
    VARIANTS = {"base": "off", "adapters": "on", "oracle": "on", "pixel": "ablation"}
    # The variants' containers, shared in the process: the variants of one family code a crop once (same encoder,
    # same bytes), keyed by (rate point, template, the crop's sha256).
    _coded: dict[tuple[str, str, str], bytes] = {}
    MAX_CODED = 100_000

    def __init__(self, base: FacelinkCodec, variant: str, domain: str | None = None):
        if variant not in self.VARIANTS:
            raise KeyError(f"unknown adapter variant {variant!r}; known: {', '.join(self.VARIANTS)}")
        super().__init__(base.qualities, name=f"{base.name}{self.SEP}{variant}", label=f"{base.label}, {variant}")
        self.base_name, self.variant, self.adapters, self.domain = base.name, variant, self.VARIANTS[variant], domain

    def for_domain(self, domain):
        if self.variant != "oracle" or domain == self.domain:
            return self
        other = AdaptedFacelinkCodec(FacelinkCodec(self.qualities, self.base_name, self.label), self.variant, domain)
        other._loaded = self._loaded  # the same rate points; the domain is chosen per decode
        return other

    def encode_crops(self, crops, quality, template):
        import hashlib

        keys = [(str(quality), template, hashlib.sha256(_check_rgb(c).tobytes()).hexdigest()) for c in crops]
        todo = [i for i, k in enumerate(keys) if k not in self._coded]
        if len(self._coded) + len(todo) > self.MAX_CODED:
            self._coded.clear()
        for i, data in zip(todo, super().encode_crops([crops[i] for i in todo], quality, template)):
            self._coded[keys[i]] = data
        return [self._coded[k] for k in keys]

    def check_available(self):
        super().check_available()
        from facelink.shared import registry

        for q in self.qualities:
            if self.adapters != "off" and not registry.load(str(q), verify=False).adapter_files:
                raise CodecUnavailable(f"{q} has no face-domain adapters (facelink train-adapters install)")

    def decode(self, data):
        if self.variant == "oracle" and self.domain is None:
            raise ValueError(f"{self.name} decodes with the probes' domain's adapter: give a probe domain")
        return super().decode(data)

    def settings_for(self, quality):
        return {
            **super().settings_for(quality),
            "adapters": self.variant,
            "adapters_digest": _adapters_digest(str(quality)) if self.adapters != "off" else None,
        }


class VariableRateFacelinkCodec(Codec):
    """facelink's variable-rate learned codec (core v2): one registry model whose quality is a continuous knob, so
    the sweep is a list of qualities (``facelink-v2`` is registry model ``face-v2``; ``facelink-v2:0,0.5,1,...``
    chooses the qualities, default each integer quality of the model). Coded as the edge codes a face (container
    version 3, which carries the quality, on its 1/256 grid) and decoded as the cloud does; charged for the whole
    container."""

    quality_name = "q"
    PREFIX = "face-"

    def __init__(self, model: str, name: str | None = None, label: str | None = None, qualities=None):
        from facelink.shared import registry

        manifest = registry.load(model, verify=False).manifest
        self.model = model
        self.name = name or f"facelink-{model.removeprefix(self.PREFIX)}"
        step = (manifest.get("training") or {}).get("step")
        self.label = label or manifest.get("label") or (
            f"facelink {model.removeprefix(self.PREFIX)} (variable rate{f', step {step:,}' if step else ''})")
        self.qualities = tuple(qualities) if qualities is not None else tuple(range(int(manifest["qualities"])))
        self._learned = None

    def _codec(self):
        if self._learned is None:
            from facelink.cloud.evaluation.codec import LearnedCodec

            self._learned = LearnedCodec(self.model)
        return self._learned

    def check_available(self):
        if not self.qualities:
            raise CodecUnavailable(f"{self.name}: no qualities to sweep")
        codec = self._codec()
        for q in self.qualities:
            try:
                codec.encoder.check_quality(float(q))
            except (TypeError, ValueError) as e:
                raise CodecUnavailable(f"{self.name}: {e}") from e

    def encode(self, rgb, quality):
        return self._codec().encode(_check_rgb(rgb), None, float(quality))

    def encode_crops(self, crops, quality, template):
        from facelink.shared.alignment import TEMPLATES

        return [self._codec().encode(_check_rgb(c), TEMPLATES[template], float(quality)) for c in crops]

    def decode(self, data):
        return np.asarray(self._codec().decode(data), dtype=np.uint8)

    def settings(self):
        return {"model": self.model, "model_digest": _model_digest(self.model),
                "format_version": _format_version(self.model)}

    def settings_for(self, quality):
        # The model's own artifacts and the container version it writes (as for a rate point); the quality is the
        # condition's own field.
        return {"model_digest": _model_digest(self.model), "format_version": _format_version(self.model)}

    def version(self):
        from facelink.shared import registry

        training = registry.load(self.model, verify=False).manifest.get("training") or {}
        try:
            from importlib.metadata import version

            facelink = f"facelink {version('facelink')}"
        except Exception:  # noqa: BLE001
            facelink = "facelink ?"
        return f"{facelink}; {self.model} at step {training.get('step', '?')} ({training.get('source', '?')})"


def variable_rate_models() -> list[str]:
    """The registry's variable-rate models (those whose tables hold a gain table)."""
    from facelink.shared import registry

    out = []
    for name in registry.available():
        try:
            if registry.load(name, verify=False).tables.variable_rate:
                out.append(name)
        except Exception:  # noqa: BLE001 - a broken model is reported when it is used
            continue
    return out


def _variable_rate_model(codec_name: str) -> str | None:
    """The registry model behind a variable-rate codec name (``facelink-v2`` → ``face-v2``), else None."""
    from facelink.shared import registry

    model = VariableRateFacelinkCodec.PREFIX + codec_name.removeprefix("facelink-")
    try:  # that one model's tables only (a family name names no model: no scan of the whole registry)
        if model not in registry.available():
            return None
        return model if registry.load(model, verify=False).tables.variable_rate else None
    except Exception:  # noqa: BLE001 - no registry (an edge-only install), or a broken model
        return None


# Learned-codec families: rate points are named face-<family>-q<k>; each family is one curve. What a family is — its
# curve label, its pixel-loss ablation (same chain, data and budget, α = 0), the family each of its points was
# fine-tuned from (the report compares them at equal bits) — is data, not code: the research ladders say it
# (cloud/training/ladders/, facelink.cloud.training.ladder.families) and the models' manifests carry it (family,
# label, ablation_of, tuned_from, written by facelink export --ladder); a family no ladder describes takes its label
# from its models' manifests.
@lru_cache(maxsize=1)
def _ladder_families() -> dict:
    try:
        from facelink.cloud.training import ladder
    except ImportError:  # an install without the training package: the manifests alone
        return {}
    return ladder.families()


def family_label(family: str) -> str:
    """A learned family's curve label: its ladder's, else a label its models' manifests give, else a default."""
    info = _ladder_families().get(family)
    if info is not None:
        return info.label
    from facelink.shared import registry

    for name in _registry_models(family):
        label = registry.load(name, verify=False).manifest.get("label")
        if label:
            return str(label)
    return f"facelink {family}"


def _partner(codec_name: str, relation: str) -> str | None:
    base = codec_name.removesuffix(BackgroundBlurred.SUFFIX)
    family = base.removeprefix("facelink-")
    info = _ladder_families().get(family) if family != base else None
    other = getattr(info, relation) if info is not None else None
    return None if other is None else f"facelink-{other}{codec_name[len(base) :]}"


def ablation_of(codec_name: str) -> str | None:
    """The codec name of an IPR family's ablation, behind the same wrapper (``facelink-iprb+roi`` →
    ``facelink-pixb+roi``); None for any other codec."""
    return _partner(codec_name, "ablation")


def tuned_from(codec_name: str) -> str | None:
    """The codec name of the family a fine-tuned family started from (``facelink-iprc`` → ``facelink-iprb``)."""
    return _partner(codec_name, "tuned_from")


def _family(name: str) -> str | None:
    parts = name.split("-")
    return parts[1] if len(parts) >= 3 and parts[0] == "face" else None


def _registry_models(family: str | None = None) -> list[str]:
    from facelink.shared import registry

    names = registry.available()
    return [n for n in names if _family(n) == family] if family else names


def learned_families() -> list[str]:
    """Codec names of the learned families in the registry (``facelink-ipr``, ...) and of its variable-rate models
    (``facelink-v2``)."""
    try:
        families = {f"facelink-{f}" for f in map(_family, _registry_models()) if f}
        return sorted(families | {f"facelink-{m.removeprefix(VariableRateFacelinkCodec.PREFIX)}"
                                  for m in variable_rate_models()})
    except Exception:  # noqa: BLE001 - no registry (an edge-only install): no learned families
        return []


def _rate_points() -> list[str]:
    """Every fixed-rate model of the registry (the ``facelink`` codec's sweep); variable-rate models are their own
    codecs."""
    vr = set(variable_rate_models())
    return [n for n in _registry_models() if n not in vr]


def _family_codec(family: str) -> Callable[[], Codec]:
    return lambda: FacelinkCodec(
        models=tuple(_registry_models(family)), name=f"facelink-{family}", label=family_label(family)
    )


# ----------------------------------------------------------------------------------------------------------
class BackgroundBlurred(Codec):
    """Any codec behind the edge's face region of interest (``<codec>+roi``): YuNet finds every face in the
    source frame, everything outside their regions is blurred (:class:`facelink.shared.roi.BackgroundBlur`, the
    edge's ``--blur-background``), then the base codec codes the frame. Charged exactly as the base codec; a frame
    without a detected face is coded as it is. Meant for the full-frame protocol: an aligned face crop is almost
    all face region already."""

    SUFFIX = "+roi"

    def __init__(self, base: Codec, roi=None):
        from facelink.shared.roi import BackgroundBlur

        self.base = base
        self.roi = roi or BackgroundBlur()
        self.name, self.label, self.quality_name = (
            base.name + self.SUFFIX,
            f"{base.label} + face ROI",
            base.quality_name,
        )
        self._detector = None

    @property
    def qualities(self):  # one sweep, the base codec's (FacelinkCodec loads its models from it)
        return self.base.qualities

    @qualities.setter
    def qualities(self, value):
        self.base.qualities = tuple(value)

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """The frame the base codec gets: background blurred around every detected face."""
        if self._detector is None:
            from facelink.shared.detection import YuNet

            self._detector = YuNet()
        return self.roi.around_faces(_check_rgb(rgb), self._detector)

    def check_available(self):
        self.base.check_available()

    def encode(self, rgb, quality):
        return self.base.encode(self.prepare(rgb), quality)

    def encode_many(self, images, quality):
        return self.base.encode_many([self.prepare(im) for im in images], quality)

    def decode(self, data):
        return self.base.decode(data)

    def decode_many(self, datas):
        return self.base.decode_many(datas)

    def bits(self, data):
        return self.base.bits(data)

    def settings(self):
        return {**self.base.settings(), "roi": self.roi.settings()}

    def settings_for(self, quality):
        return {**self.base.settings_for(quality), "roi": self.roi.settings()}

    def version(self):
        return self.base.version()


# ----------------------------------------------------------------------------------------------------------
REGISTRY: dict[str, Callable[[], Codec]] = {
    "uncompressed": Uncompressed,
    "jpeg": JPEG,
    "webp": WebP,
    "avif": AVIF,
    "jxl": JPEGXL,
    "hevc": HEVC,
    # facelink's learned codecs: every rate point in the registry ("facelink"), and one entry per family
    # ("facelink-ipr", ...; added below), the sweep being its models' names; a variable-rate model face-<x> is
    # codec facelink-<x>, its sweep being qualities.
    "facelink": lambda: FacelinkCodec(models=tuple(_rate_points())),
}
CLASSICAL = ("jpeg", "webp", "avif", "jxl", "hevc")


def get_codec(name: str, qualities: Sequence | None = None) -> Codec:
    """A codec by registry name (``<name>+roi``: behind the edge's background blur); ``qualities`` overrides its
    default sweep."""
    if name.endswith(BackgroundBlurred.SUFFIX) and len(name) > len(BackgroundBlurred.SUFFIX):
        codec = BackgroundBlurred(get_codec(name[: -len(BackgroundBlurred.SUFFIX)]))
    elif AdaptedFacelinkCodec.SEP in name:  # facelink-<family>@<variant>: decoded with its adapters or without
        base_name, _, variant = name.rpartition(AdaptedFacelinkCodec.SEP)
        base = get_codec(base_name)
        if not isinstance(base, FacelinkCodec):
            raise KeyError(f"{name}: only facelink's learned codecs have adapter variants")
        codec = AdaptedFacelinkCodec(base, variant)
    elif name in REGISTRY:
        codec = REGISTRY[name]()
    elif name.startswith("facelink-") and (vr_model := _variable_rate_model(name)) is not None:
        codec = VariableRateFacelinkCodec(vr_model, name)
    elif name.startswith("facelink-"):
        codec = _family_codec(name.removeprefix("facelink-"))()
    else:
        raise KeyError(f"unknown codec {name!r}; known: {', '.join([*REGISTRY, *learned_families()])}")
    if qualities is not None:
        codec.qualities = tuple(qualities)
    return codec


def parse_codec_spec(spec: str) -> Codec:
    """``name`` or ``name:q1,q2,...`` (e.g. ``hevc:23,33,43``, ``facelink:face-q1,face-q4`` or a variable-rate
    model's qualities ``facelink-v2:0,0.5,1``): whole numbers as int, other numbers as float, else the text."""
    name, _, qs = spec.partition(":")
    if not qs:
        return get_codec(name)
    vals = []
    for q in qs.split(","):
        q = q.strip()
        try:
            vals.append(int(q))
        except ValueError:
            try:
                vals.append(float(q))
            except ValueError:
                vals.append(q)
    return get_codec(name, vals)
