"""The benchmark's capture domains and adapter variants: probes transformed before coding, the clean gallery kept,
earlier cache keys unchanged, and variants that decode the very same bytes."""
import json
import shutil

import numpy as np
import pytest

from facelink.benchmarks import codecs, engine
from facelink.shared import registry

MODEL = "face-ipr-q0"


def test_a_condition_without_probe_domain_keeps_its_earlier_key():
    from facelink.shared.detection import YUNET_SHA256

    c = engine.Condition("lfw", "face-crop", "jpeg", 10, "{}", True)
    blob = json.dumps({"v": engine.ENGINE_VERSION, "dataset": "lfw", "protocol": "face-crop", "codec": "jpeg",
                       "quality": 10, "settings": "{}", "detector": YUNET_SHA256[:16], "crop": engine.CROP_TEMPLATE},
                      sort_keys=True)
    import hashlib
    assert c.key == hashlib.sha256(blob.encode()).hexdigest()[:24]
    assert engine.Condition("lfw", "face-crop", "jpeg", 10, "{}", True, probe_domain="nir").key != c.key


def test_a_probe_domain_needs_the_asymmetric_setting_and_a_known_name():
    with pytest.raises(ValueError, match="asymmetric"):
        engine.RunConfig(probe_domain="nir")
    with pytest.raises(ValueError, match="unknown domain"):
        engine.RunConfig(probe_domain="fog", settings=["asymmetric"])
    cfg = engine.RunConfig(probe_domain="nir", settings=["asymmetric"], codecs=[codecs.get_codec("jpeg")])
    # the uncompressed reference twice: the clean gallery and the domain's probes uncompressed
    assert engine.probe_conditions(cfg, codecs.get_codec("uncompressed")) == [None, "nir"]
    assert engine.probe_conditions(cfg, codecs.get_codec("jpeg")) == ["nir"]


def test_the_engine_applies_the_domain_to_what_the_codec_gets(demo_faces):
    keys = [str(p.relative_to(demo_faces)) for p in sorted((demo_faces / "probe").glob("*.jpg"))[:2]]
    task = {"cond": "c", "protocol": "face-crop", "codec": "jpeg", "quality": 40, "root": str(demo_faces),
            "images": keys, "recognizers": [], "flip": False}
    engine._init_worker(1)
    _, clean, _ = engine.process_images(task)
    _, nir, _ = engine.process_images({**task, "probe_domain": "nir"})
    _, nir2, _ = engine.process_images({**task, "probe_domain": "nir"})
    assert [r["data"] for r in nir] == [r["data"] for r in nir2]  # deterministic per image
    assert all(a["bits"] != b["bits"] for a, b in zip(clean, nir))


def test_variant_names_and_errors():
    c = codecs.get_codec("facelink-ipr@adapters")
    assert isinstance(c, codecs.AdaptedFacelinkCodec) and c.name == "facelink-ipr@adapters"
    assert c.for_domain("nir") is c
    o = codecs.get_codec("facelink-ipr@oracle")
    assert o.for_domain("nir").domain == "nir" and o.for_domain("nir").name == o.name
    with pytest.raises(KeyError, match="unknown adapter variant"):
        codecs.get_codec("facelink-ipr@sometimes")
    with pytest.raises(KeyError, match="only facelink"):
        codecs.get_codec("jpeg@adapters")
    assert codecs.parse_codec_spec("facelink-ipr@base:face-ipr-q0,face-ipr-q2").qualities == ("face-ipr-q0",
                                                                                             "face-ipr-q2")


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    """A copy of the committed rate point with (untrained, non-zero) adapters installed, and one without."""
    import torch

    from facelink.cloud.serving import adapters
    from facelink.cloud.training import train_adapters as ta

    root = tmp_path_factory.mktemp("models")
    out = {}
    for kind in ("plain", "adapted"):
        dst = root / kind / MODEL
        shutil.copytree(registry.load(MODEL).path, dst)
        m = json.loads((dst / "manifest.json").read_text())
        for name in registry.load(MODEL).adapter_files:
            (dst / name).unlink()
            m["files"].pop(name)
        m.pop("adapters", None)
        (dst / "manifest.json").write_text(json.dumps(m))
        out[kind] = dst
    bundle = registry.load(str(out["adapted"]))
    for run, alpha in (("run", 600.0), ("run0", 0.0)):
        module = adapters.AdaptedSynthesis(ta.base_synthesis(bundle), adapters.AdapterConfig(), bundle.manifest["M"])
        with torch.no_grad():
            for st in module.adapters.values():
                st.up_weight.normal_(0, 0.02)
        (root / run).mkdir()
        adapters.save(module, root / run / ta.ADAPTERS_FILE, {"model": MODEL, "model_id": bundle.model_id,
                                                             "alpha": alpha, "unseen_domain": "webcam"})
    ta.install(root / "run", root / "run0", out["adapted"])
    registry._load.cache_clear()
    return out


def test_adding_adapters_keeps_the_base_codecs_cache_key(adapted):
    assert codecs._model_digest(str(adapted["plain"])) == codecs._model_digest(str(adapted["adapted"]))
    assert codecs._adapters_digest(str(adapted["plain"])) is None
    assert codecs._adapters_digest(str(adapted["adapted"])) is not None


def test_variants_decode_the_same_bytes_differently(adapted, face_rgb):
    from facelink.edge.encoder import FaceCropper

    crop = FaceCropper().crop(face_rgb)[0]
    q = str(adapted["adapted"])
    out = {}
    codecs.AdaptedFacelinkCodec._coded.clear()
    for variant in ("base", "adapters", "oracle", "pixel"):
        c = codecs.get_codec(f"facelink-ipr@{variant}", [q]).for_domain("nir")
        c.check_available()
        (data,) = c.encode_crops([crop], q, "arcface-112")
        out[variant] = (data, c.decode(data))
    assert len({d for d, _ in out.values()}) == 1  # one bitstream, coded once for the four variants
    assert len(codecs.AdaptedFacelinkCodec._coded) == 1
    assert out["base"][0] == codecs.get_codec("facelink", [q]).encode_crops([crop], q, "arcface-112")[0]
    plain = codecs.get_codec("facelink", [str(adapted["plain"])])
    assert np.array_equal(out["base"][1], plain.decode(out["base"][0]))
    images = [im.tobytes() for _, im in out.values()]
    assert len(set(images)) == 4
    with pytest.raises(codecs.CodecUnavailable, match="no face-domain adapters"):
        codecs.get_codec("facelink-ipr@adapters", [str(adapted["plain"])]).check_available()


def test_bench_run_refuses_an_unknown_probe_domain_or_a_symmetric_one(capsys):
    from facelink.benchmarks import bench

    assert bench.main(["run", "--probe-domain", "fog", "--codecs", "jpeg", "--datasets", "lfw"]) == 2
    assert "unknown domain 'fog'" in capsys.readouterr().err
    assert bench.main(["run", "--probe-domain", "nir", "--settings", "symmetric", "--codecs", "jpeg"]) == 2
    assert "asymmetric" in capsys.readouterr().err


def test_the_batched_variants_decode_as_the_cloud_decoder_does_one_by_one(adapted, face_rgb):
    from facelink.benchmarks.adapters_bench import Variants, domain_crops
    from facelink.cloud.evaluation.codec import LearnedCodec
    from facelink.cloud.serving.decoder import CloudDecoder
    from facelink.edge.encoder import FaceCropper
    from facelink.shared.alignment import ARCFACE_112

    q = str(adapted["adapted"])
    crop = FaceCropper().crop(face_rgb)[0]
    crops = [crop, *domain_crops({"a/x.jpg": crop}, "nir").values(), *domain_crops({"a/y.jpg": crop}, "jpeg").values()]
    datas = [LearnedCodec(q).encode(c, ARCFACE_112) for c in crops]
    variants = Variants(q)
    y, frames = variants.latents(datas)
    images, weights = variants.decode(y, frames, "nir")
    assert set(images) == {"base", "adapters", "oracle", "pixel"} and weights.shape == (3, 4)
    one_by_one = {"base": CloudDecoder([q], adapters="off"), "adapters": CloudDecoder([q], adapters="on"),
                  "pixel": CloudDecoder([q], adapters="ablation")}
    for i, data in enumerate(datas):
        for v, dec in one_by_one.items():
            got = dec.decode(data)
            # one forward pass for the batch instead of one per container: equal up to float rounding
            assert np.abs(images[v][i].astype(int) - got.image.astype(int)).max() <= 1, v
            if v == "adapters":
                assert np.allclose(weights[i], list(got.domain_weights.values()), atol=1e-5)
        oracle = one_by_one["adapters"].decode(data, "nir").image
        assert np.abs(images["oracle"][i].astype(int) - oracle.astype(int)).max() <= 1
