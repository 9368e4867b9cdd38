"""Edge encoding: image → ONNX analysis transform (onnxruntime) → shared entropy coder → .flk container.

No torch here: onnxruntime, numpy and OpenCV only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from facelink.shared import bitstream, codec, registry
from facelink.shared.alignment import ARCFACE_112, CROP_TEMPLATES, Template, align, template_id
from facelink.shared.detection import Detection, YuNet
from facelink.shared.roi import BackgroundBlur


@dataclass
class Encoded:
    data: bytes
    height: int
    width: int
    detection: Detection | None = None

    @property
    def bpp(self) -> float:
        return 8.0 * len(self.data) / (self.height * self.width)


class EdgeEncoder:
    """Encodes RGB uint8 images with one rate point of the model registry."""

    def __init__(self, model: str | None = None, threads: int = 1, format_version: int = bitstream.FORMAT_VERSION):
        if format_version not in bitstream.READABLE_VERSIONS:
            raise ValueError(f"bitstream format version {format_version}; facelink writes versions "
                             f"{', '.join(map(str, bitstream.READABLE_VERSIONS))}")
        self.bundle = registry.load(model)
        self.format_version = format_version
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.bundle.encoder_onnx), opts, providers=["CPUExecutionProvider"])

    @property
    def model_id(self) -> str:
        return self.bundle.model_id

    def analyse(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Latents (y, z) of an image, padded (edge replication) to multiples of 64."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an H×W×3 uint8 RGB image, got shape {rgb.shape} dtype {rgb.dtype}")
        h, w = rgb.shape[:2]
        if not (0 < h <= bitstream.MAX_DIM and 0 < w <= bitstream.MAX_DIM):
            raise ValueError(f"image size {w}×{h} out of range")
        pb, pr = bitstream.padding_for(h, w)
        padded = np.pad(rgb, ((0, pb), (0, pr), (0, 0)), mode="edge") if (pb or pr) else rgb
        x = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)
        y, z = self.session.run(["y", "z"], {"image": x})
        return y[0], z[0]

    def encode(self, rgb: np.ndarray, template: Template | None = None) -> bytes:
        """One image → container. ``template``: the image is a crop aligned to it (the cloud skips detection)."""
        return self.encode_with_symbols(rgb, template)[0]

    def encode_with_symbols(self, rgb: np.ndarray, template: Template | None = None
                            ) -> tuple[bytes, codec.DecodedSymbols]:
        """The container and the symbols it codes (what a decoder must reproduce exactly)."""
        tid = template_id(template) if template is not None else 0
        if tid and rgb.shape[:2] != (template.height, template.width):
            raise ValueError(f"a crop aligned to {template.name} is {template.width}×{template.height}, "
                             f"got {rgb.shape[1]}×{rgb.shape[0]}")
        y, z = self.analyse(rgb)
        streams, symbols = codec.encode_latents(self.bundle.tables, y, z, rgb.shape[0], rgb.shape[1],
                                                self.format_version)
        frame = bitstream.Frame(self.model_id, rgb.shape[0], rgb.shape[1], streams, tid, self.format_version)
        return bitstream.pack(frame), symbols


class FaceCropper:
    """Detects the most prominent face and aligns it to the edge's crop template (by default the canonical 112×112)."""

    def __init__(self, template: Template = ARCFACE_112, detector: YuNet | None = None):
        self.template = template
        self.detector = detector or YuNet()

    def crop(self, rgb: np.ndarray) -> tuple[np.ndarray, Detection] | None:
        det = self.detector.largest(rgb, rgb=True)
        if det is None:
            return None
        return align(rgb, det.landmarks, self.template), det


class EdgePipeline:
    """What a camera runs: face crop (default) or full frame, then encode.

    ``blur_background`` (full frame only): blur everything outside the detected faces before coding
    (:class:`facelink.shared.roi.BackgroundBlur`), so the bits go to the faces; a frame without a face is coded as
    it is. The bitstream and the cloud are the same either way."""

    def __init__(self, model: str | None = None, full_frame: bool = False, threads: int = 1,
                 blur_background: BackgroundBlur | None = None, format_version: int = bitstream.FORMAT_VERSION,
                 crop_template: str = ARCFACE_112.name):
        if blur_background is not None and not full_frame:
            raise ValueError("background blur applies to full-frame coding (a face crop is all face)")
        template = CROP_TEMPLATES.get(crop_template)
        if template is None:  # a crop the container cannot name cannot be sent
            raise ValueError(f"unknown crop template {crop_template!r}; known: {', '.join(CROP_TEMPLATES)}")
        self.encoder = EdgeEncoder(model, threads, format_version)
        self.full_frame = full_frame
        self.blur = blur_background
        self.cropper = None if full_frame else FaceCropper(template)
        self.detector = YuNet() if blur_background is not None else None

    def process(self, rgb: np.ndarray) -> Encoded | None:
        """The coded frame, or None when crop mode finds no face (nothing is sent)."""
        if self.full_frame:
            if self.blur is not None:
                rgb = self.blur.around_faces(rgb, self.detector)
            return Encoded(self.encoder.encode(rgb), rgb.shape[0], rgb.shape[1])
        found = self.cropper.crop(rgb)
        if found is None:
            return None
        crop, det = found
        return Encoded(self.encoder.encode(crop, self.cropper.template), crop.shape[0], crop.shape[1], det)
