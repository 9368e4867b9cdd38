"""Edge encode → cloud decode, golden vectors, and the edge's independence from torch."""
import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from facelink.cloud.serving.codec_model import ARCHITECTURE, build
from facelink.cloud.serving.decoder import CloudDecoder
from facelink.cloud.training import export as export_mod
from facelink.edge.encoder import EdgeEncoder, EdgePipeline
from facelink.shared import bitstream, codec, registry

GOLDEN = Path(__file__).parent / "golden"
RATE_POINT = "face-ipr-q1"  # a fixed-rate model: the reference model and container versions 1-2 are theirs


@pytest.fixture(scope="module")
def encoder():
    return EdgeEncoder(RATE_POINT)


@pytest.fixture(scope="module")
def decoder():
    return CloudDecoder()


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def test_round_trip_face_crop(encoder, decoder, face_rgb):
    enc = EdgePipeline().process(face_rgb)
    assert enc is not None and (enc.height, enc.width) == (112, 112)
    frame = bitstream.unpack(enc.data)
    assert frame.aligned and frame.template_id == 1 and frame.padded_shape == (128, 128)
    dec = decoder.decode(enc.data)
    assert dec.image.shape == (112, 112, 3)
    crop = EdgePipeline().cropper.crop(face_rgb)[0]
    assert psnr(dec.image, crop) > 24.0


def test_round_trip_full_frame_odd_size(encoder, decoder, face_rgb):
    img = np.ascontiguousarray(face_rgb[3:200, 10:241])  # 197×231: padded to 256×256
    data = encoder.encode(img)
    dec = decoder.decode(data)
    assert dec.image.shape == img.shape
    assert psnr(dec.image, img) > 22.0


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A freshly initialised (untrained) codec, checkpointed and exported in both weight precisions."""
    root = tmp_path_factory.mktemp("registry")
    torch.manual_seed(0)
    model = build(ARCHITECTURE, 64, 128).eval()
    with torch.no_grad():  # untrained GDNs are all equal, and the ONNX exporter would merge them
        for p in model.parameters():
            p.mul_(1 + 0.05 * torch.rand_like(p))
    ckpt = root / "model.pt"
    cfg = {"architecture": ARCHITECTURE, "N": 64, "M": 128, "lmbda": 0.01, "datasets": []}
    torch.save({"config": cfg, "model": model.state_dict(), "step": 0}, ckpt)
    for w in ("float32", "float16"):
        export_mod.export(ckpt, f"t-{w}", root, weights=w)
    model, _ = export_mod.load_checkpoint(ckpt)
    return model, root


def _onnx(bundle, x):
    sess = ort.InferenceSession(str(bundle.encoder_onnx), providers=["CPUExecutionProvider"])
    return sess.run(["y", "z"], {"image": x})


@pytest.mark.parametrize("weights", ["float32", "float16"])
def test_onnx_encoder_matches_torch(face_rgb, exported, weights):
    model, root = exported
    bundle = registry.load(f"t-{weights}", root)
    assert bundle.manifest["weights"] == weights
    assert set(bundle.manifest["files"]) == {"encoder.onnx", "tables.npz", "decoder.safetensors"}
    x = np.ascontiguousarray(face_rgb[:128, :192].transpose(2, 0, 1)[None], dtype=np.float32) / 255
    y, z = _onnx(bundle, x)
    with torch.no_grad():
        yd, zd = export_mod.deployed_encoder(model, weights)(torch.from_numpy(x))  # what was exported
        yt = model.g_a(torch.from_numpy(x))  # the checkpoint itself
    assert np.abs(y - yd.numpy()).max() < 1e-4 and np.abs(z - zd.numpy()).max() < 1e-4
    tol = 1e-4 if weights == "float32" else 2e-2 * float(yt.abs().max())
    assert np.abs(y - yt.numpy()).max() < tol
    # the torch model reassembled from the artifacts computes the same
    ref = export_mod.reference_model(bundle)
    with torch.no_grad():
        yr = ref.g_a(torch.from_numpy(x))
    assert np.abs(y - yr.numpy()).max() < 1e-4


def test_float16_export_halves_the_weights(exported):
    _, root = exported
    size = {w: sum((root / f"t-{w}" / f).stat().st_size for f in ("encoder.onnx", "decoder.safetensors"))
            for w in ("float32", "float16")}
    assert size["float16"] < 0.55 * size["float32"]
    a, b = (registry.load(f"t-{w}", root) for w in ("float32", "float16"))
    assert a.model_id == b.model_id  # precision of the float transforms never touches the bitstream


def test_models_sharing_a_bitstream_are_never_guessed(exported, face_rgb):
    """Two models with one encoder and one set of tables (here: the two precisions; in training, a decoder refined
    with train_only: decoder) share a model id. A decoder holding both refuses such a container and names them;
    one holding a single one, as LearnedCodec does, decodes it with that model's own decoder."""
    from facelink.cloud.evaluation.codec import LearnedCodec

    _, root = exported
    data = EdgeEncoder(str(root / "t-float16")).encode(face_rgb[:128, :128].copy())
    with pytest.raises(codec.ModelMismatchError, match=r"models t-float16, t-float32 all decode"):
        CloudDecoder(["t-float16", "t-float32"], root=root).decode(data)
    images = {w: CloudDecoder([f"t-{w}"], root=root).decode(data) for w in ("float32", "float16")}
    assert {w: d.model_name for w, d in images.items()} == {"float32": "t-float32", "float16": "t-float16"}
    learned = LearnedCodec(str(root / "t-float16"))
    assert np.array_equal(learned.decode(data), images["float16"].image)


def test_info_does_not_call_an_ambiguous_model_served(exported):
    """facelink-edge info: a server holding two models for the edge model's bitstream refuses its containers, so the
    edge model is not "served" there; the models to choose between are named."""
    from facelink.edge.cli import edge_model_status

    _, root = exported
    local = registry.load("t-float16", root)
    one = [{"name": "t-float16", "model_id": local.model_id}, {"name": "other", "model_id": "0" * 16}]
    assert edge_model_status(local, one) == {"name": "t-float16", "model_id": local.model_id, "served": True}
    both = one + [{"name": "t-float32", "model_id": local.model_id}]
    status = edge_model_status(local, both)
    assert not status["served"] and status["ambiguous"] == ["t-float16", "t-float32"] and "ambiguous" in status["why"]
    assert not edge_model_status(local, one[1:])["served"]


def test_models_lists_shared_bitstreams(exported, monkeypatch, capsys):
    from facelink.edge.cli import main

    _, root = exported
    monkeypatch.setenv(registry.MODELS_PATH_ENV, str(root))
    assert main(["models"]) == 0
    lines = {line.split("\t")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["t-float16"].endswith("same bitstream as t-float32")
    assert lines["t-float32"].endswith("same bitstream as t-float16")
    assert "same bitstream" not in lines[registry.DEFAULT_MODEL]


def test_tables_store_int16_but_hash_canonically(exported, tmp_path):
    _, root = exported
    path = root / "t-float32" / "tables.npz"
    with np.load(path) as f:
        assert f["hs0_weight"].dtype == np.int16
    t = registry.load("t-float32", root).tables
    from facelink.shared import tables as tables_mod
    tables_mod.save(t, tmp_path / "again.npz")
    assert tables_mod.load(tmp_path / "again.npz").model_id == t.model_id


def test_integer_entropy_parameters_follow_the_float_model(exported):
    """The integer hyper-synthesis approximates the float one it was exported from to its fixed-point resolution."""
    model, root = exported
    t = registry.load("t-float32", root).tables
    z_sym = np.random.default_rng(0).integers(-2, 3, (t.N, 2, 2))
    scales, means = t.hyper(z_sym)
    z_hat = torch.from_numpy(z_sym + t.hyper.z_medians[:, None, None] / 2.0**t.hyper.frac_bits).float()[None]
    with torch.no_grad():
        s_f, m_f = model.h_s(z_hat).chunk(2, 1)
    res = 2.0**-t.hyper.frac_bits
    assert np.abs(scales * res - s_f[0].numpy()).max() < 64 * res
    assert np.abs(means * res - m_f[0].numpy()).max() < 64 * res


def test_reference_model_decodes_like_the_cloud(face_rgb, decoder):
    """Torch ``decompress`` of the reassembled reference model reproduces the cloud decoder's image."""
    bundle = registry.load(RATE_POINT)
    data = EdgeEncoder(RATE_POINT).encode(face_rgb[:128, :128].copy())
    frame = bitstream.unpack(data)
    y_hat = codec.decompress_latents(bundle.tables, frame)
    ref = export_mod.reference_model(bundle)
    with torch.no_grad():
        x = ref.g_s(torch.from_numpy(y_hat)[None]).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    img = decoder.decode(data).image
    assert np.abs(x * 255 - img.astype(np.float64)).max() <= 1.0


def test_model_mismatch_is_reported(encoder, decoder, face_rgb):
    data = encoder.encode(face_rgb[:64, :64].copy())
    frame = bitstream.unpack(data)
    other = bitstream.pack(dataclasses.replace(frame, model_id="f" * 16))
    with pytest.raises(codec.ModelMismatchError):
        decoder.decode(other)


@pytest.mark.parametrize("version", bitstream.READABLE_VERSIONS)
@pytest.mark.parametrize("name", ["colin_powell_crop", "tony_blair_full"])
def test_golden_vectors(name, version, decoder, demo_faces):
    """Stored containers of every version decode to the same latents, and the edge still writes the same bytes
    (the version-1 files were written before version 2 existed)."""
    case = json.loads((GOLDEN / "golden.json").read_text())[name]
    meta = case["versions"][str(version)]
    data = (GOLDEN / meta["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == meta["sha256"]
    bundle = registry.load(case["model"])  # the golden model (tests/golden/make_golden.py), not the default
    assert case["model_id"] == bundle.model_id, "golden vectors are stale: run tests/golden/make_golden.py"
    frame = bitstream.unpack(data)
    assert frame.version == version
    y_hat = codec.decompress_latents(bundle.tables, frame)
    assert hashlib.sha256(y_hat.tobytes()).hexdigest() == meta["y_hat_sha256"]
    decoder.decode(data)
    import cv2

    rgb = cv2.cvtColor(cv2.imread(str(demo_faces / case["source"])), cv2.COLOR_BGR2RGB)
    pipe = EdgePipeline(case["model"], full_frame=case["full_frame"], format_version=version)
    assert pipe.process(rgb).data == data


def test_version_2_codes_the_crop_not_its_padding(decoder, face_rgb):
    """Version 2 leaves out the latent positions that cover only the 112×112 crop's padding (7×7 of 8×8 coded):
    the same crop takes fewer bytes, those positions decode to the entropy model's means, the rest is unchanged."""
    pipe1, pipe2 = EdgePipeline(RATE_POINT, format_version=1), EdgePipeline(RATE_POINT)
    crop = pipe2.cropper.crop(face_rgb)[0]
    tmpl = pipe2.cropper.template
    d1, s1 = pipe1.encoder.encode_with_symbols(crop, tmpl)
    d2, s2 = pipe2.encoder.encode_with_symbols(crop, tmpl)
    assert len(d2) < 0.9 * len(d1)
    assert s2.coded_shape == (7, 7) and s1.coded_shape == (8, 8)
    np.testing.assert_array_equal(s2.y[:, :7, :7], s1.y[:, :7, :7])
    assert not s2.y[:, 7, :].any() and not s2.y[:, :, 7].any()
    np.testing.assert_array_equal(s2.y_hat[:, 7, :], s2.means[:, 7, :])
    assert psnr(decoder.decode(d2).image, crop) > psnr(decoder.decode(d1).image, crop) - 1.5


NO_TORCH = r"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'torchvision', 'compressai'):
            raise ImportError(f'the edge must not import {name}')
sys.meta_path.insert(0, Block())
from facelink.edge.cli import main
rc = main(sys.argv[1:])
assert rc == 0, rc
assert not any(m.split('.')[0] in ('torch', 'compressai') for m in sys.modules), 'torch was imported'
"""


def test_edge_runs_without_torch(tmp_path, demo_faces):
    out = tmp_path / "face.flk"
    src = demo_faces / "probe" / "Serena_Williams_0002.jpg"
    r = subprocess.run([sys.executable, "-c", NO_TORCH, "encode", str(src), "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["bytes"] == out.stat().st_size > 0
    assert bitstream.unpack(out.read_bytes()).template_id == 1


def test_one_name_in_two_registry_folders_must_be_one_model(exported, tmp_path, monkeypatch):
    """A name in the package's registry and again under $FACELINK_MODELS_PATH loads only if both hold the same
    files; otherwise the search order would pick one silently, and a benchmark could measure another model than
    the one its user exported."""
    import shutil

    _, root = exported
    other = tmp_path / "extra"
    shutil.copytree(root / "t-float16", other / registry.DEFAULT_MODEL)
    monkeypatch.setenv(registry.MODELS_PATH_ENV, str(other))
    with pytest.raises(registry.AmbiguousModelError, match="2 registry folders with different files"):
        registry.load(registry.DEFAULT_MODEL)
    shutil.rmtree(other / registry.DEFAULT_MODEL)
    shutil.copytree(registry.MODELS_DIR / registry.DEFAULT_MODEL, other / registry.DEFAULT_MODEL)
    # the same files: no conflict, and the package's own folder comes first
    assert registry.load(registry.DEFAULT_MODEL).path == (registry.MODELS_DIR / registry.DEFAULT_MODEL).resolve()
