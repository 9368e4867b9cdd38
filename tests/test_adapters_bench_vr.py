"""The adapters benchmark on a variable-rate model (core v2): ``NAME:Q`` units, coded at their quality and decoded
by the batched variants with each container's inverse gain before g_s, the adapters and their gate, exactly as the
cloud's decoder does."""
import argparse
import hashlib
import json
import shutil

import numpy as np
import pytest

from facelink.shared import registry

VR_MODEL = "face-v2"
RATE_POINT = "face-ipr-q0"


@pytest.fixture(scope="module")
def vr_adapted(tmp_path_factory):
    """A copy of the variable-rate model with (untrained, non-zero) adapters installed as train_adapters.install
    lists them: the file's sha256 under ``files`` and an ``adapters`` entry."""
    import torch

    from facelink.cloud.serving import adapters, variable_rate
    from facelink.cloud.training import domains as dm
    from facelink.shared.detection import sha256_file

    src = registry.load(VR_MODEL)
    assert variable_rate.is_variable_rate(src.manifest)
    dst = tmp_path_factory.mktemp("models") / VR_MODEL
    shutil.copytree(src.path, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    for name in src.adapter_files:  # start from the bare model, whatever the registry's copy lists
        (dst / name).unlink()
        manifest["files"].pop(name)
    manifest.pop("adapters", None)
    g_s = variable_rate.load_synthesis(variable_rate.from_manifest(manifest), dst / "decoder.safetensors").g_s
    torch.manual_seed(0)  # the gate's and the adapters' initial weights too: one fixture, whatever ran before
    module = adapters.AdaptedSynthesis(g_s, adapters.AdapterConfig(), manifest["M"])
    with torch.no_grad():
        for st in module.adapters.values():
            st.up_weight.normal_(0, 0.1)
    info = {"model": VR_MODEL, "model_id": manifest["model_id"], "alpha": 600.0, "unseen_domain": dm.UNSEEN,
            "steps": 0}
    adapters.save(module.eval(), dst / "adapters.safetensors", info)
    manifest["files"]["adapters.safetensors"] = sha256_file(dst / "adapters.safetensors")
    manifest["adapters"] = {"file": "adapters.safetensors", "domains": list(module.domains),
                            "unseen_domain": dm.UNSEEN, "training": info}
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return dst


def test_a_variable_rate_unit_decodes_through_the_variants_as_the_cloud_decoder_does(vr_adapted, face_rgb):
    import torch

    from facelink.benchmarks.adapters_bench import Variants, _training, domain_crops, parse_unit
    from facelink.cloud.evaluation.codec import LearnedCodec
    from facelink.cloud.serving.decoder import CloudDecoder
    from facelink.edge.encoder import FaceCropper
    from facelink.shared.alignment import ARCFACE_112

    q = str(vr_adapted)
    name, quality = parse_unit(f"{q}:2")
    assert (name, quality) == (q, 2.0)
    crop = FaceCropper().crop(face_rgb)[0]
    nir = next(iter(domain_crops({"a/x.jpg": crop}, "nir").values()))
    codec = LearnedCodec(name)
    # one batch, two qualities: each container's own inverse gain
    datas = [codec.encode(crop, ARCFACE_112, quality=quality), codec.encode(nir, ARCFACE_112, quality=4.0)]
    variants = Variants(name)
    assert variants.vr is not None
    y, frames = variants.latents(datas)
    assert [f.quality for f in frames] == [2.0, 4.0]
    images, weights = variants.decode(y, frames, "nir")
    assert set(images) == {"base", "adapters", "oracle"} and weights.shape == (2, len(variants.domains))
    on, off = CloudDecoder([q], adapters="on"), CloudDecoder([q], adapters="off")
    for i, data in enumerate(datas):
        got_on, got_off = on.decode(data), off.decode(data)
        # one forward pass for the batch instead of one per container: equal up to float rounding
        assert np.abs(images["adapters"][i].astype(int) - got_on.image.astype(int)).max() <= 1
        assert np.abs(images["base"][i].astype(int) - got_off.image.astype(int)).max() <= 1
        assert np.allclose(weights[i], list(got_on.domain_weights.values()), atol=1e-5)
        oracle = on.decode(data, "nir").image
        assert np.abs(images["oracle"][i].astype(int) - oracle.astype(int)).max() <= 1
        # the adapters change the output, so the comparison above is not base against base
        assert np.abs(images["adapters"][i].astype(int) - images["base"][i].astype(int)).max() > 4
    # the test would catch a missing inverse gain: g_s on the gained latent is another image
    with torch.inference_mode():
        raw = variants.modules["base"](torch.from_numpy(y[:1])).clamp(0, 1)
    raw = (raw[0].permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)[: frames[0].height, : frames[0].width]
    assert np.abs(raw.astype(int) - images["base"][0].astype(int)).max() > 8
    # training info: looked up by the model, keyed by the unit
    assert set(_training([f"{q}:2"])) == {f"{q}:2"}


def test_units_are_parsed_once_and_a_wrong_one_is_refused():
    from facelink.benchmarks.adapters_bench import parse_unit

    assert parse_unit(RATE_POINT) == (RATE_POINT, None)
    assert parse_unit(f"{VR_MODEL}:2") == (VR_MODEL, 2.0)
    assert parse_unit(f"{VR_MODEL}:0.5") == (VR_MODEL, 0.5)
    top = registry.quality_range(registry.load(VR_MODEL).manifest).top
    with pytest.raises(SystemExit, match=rf"{RATE_POINT} is a fixed-rate rate point"):
        parse_unit(f"{RATE_POINT}:2")
    with pytest.raises(SystemExit, match=rf"{VR_MODEL} is a variable-rate model.*\[0, {top}\]"):
        parse_unit(VR_MODEL)
    with pytest.raises(SystemExit, match=rf"outside {VR_MODEL}'s range \[0, {top}\]"):
        parse_unit(f"{VR_MODEL}:{top + 1}")
    with pytest.raises(SystemExit, match="a number"):
        parse_unit(f"{VR_MODEL}:high")
    with pytest.raises(SystemExit, match="no model"):
        parse_unit("face-nonexistent:1")


def test_the_measures_key_holds_the_quality_and_a_rate_points_key_is_unchanged(tmp_path):
    from facelink.benchmarks.adapters_bench import MEASURE_VERSION, _measure_path
    from facelink.benchmarks.codecs import _adapters_digest, _model_digest

    args = argparse.Namespace(limit=5, no_flip=True, recognizers=["mobilefacenet"], rec_limit={},
                              secondary_variants=["base", "adapters"], whole_runs={}, cache=tmp_path / "a.sqlite")
    p2, p2b, p4 = (_measure_path(args, "lfw", "nir", u) for u in (f"{VR_MODEL}:2", f"{VR_MODEL}:2.0",
                                                                  f"{VR_MODEL}:4"))
    assert p2 == p2b and p2 != p4 and ":" not in p2.name
    # a rate point's file is the one the benchmark always used (its cached measures stay valid)
    key = json.dumps({"v": MEASURE_VERSION, "ds": "lfw", "limit": 5, "model": _model_digest(RATE_POINT),
                      "adapters": _adapters_digest(RATE_POINT), "flip": False, "recognizers": [["mobilefacenet", 5]],
                      "secondary": ["base", "adapters"], "whole": None}, sort_keys=True)
    h = hashlib.sha256(key.encode()).hexdigest()[:16]
    assert _measure_path(args, "lfw", "nir", RATE_POINT) == tmp_path / "adapters-measures-v2" / \
        f"lfw-nir-{RATE_POINT}-{h}.json"
