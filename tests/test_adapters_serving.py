"""Adapters in service: a rate point's bundle lists them with sha256, the decoder uses them (or not), the edge's
bytes are the same either way, the server reports the gate per frame and the domains per model, and a client built
before these fields keeps working."""
import json
import shutil
import signal
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
import torch
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from facelink.cloud.serving import adapters
from facelink.cloud.serving.decoder import CloudDecoder
from facelink.cloud.training import train_adapters as ta
from facelink.edge.encoder import EdgeEncoder, FaceCropper
from facelink.shared import registry
from facelink.shared.alignment import ARCFACE_112
from facelink.v1 import facelink_pb2 as pb

MODEL = "face-ipr-q0"


def _stripped_copy(dst):
    """The committed rate point without any adapters: files and manifest as before adapters existed."""
    shutil.copytree(registry.load(MODEL).path, dst)
    m = json.loads((dst / "manifest.json").read_text())
    for name in registry.load(MODEL).adapter_files:
        (dst / name).unlink()
        m["files"].pop(name)
    m.pop("adapters", None)
    (dst / "manifest.json").write_text(json.dumps(m, indent=2))
    return dst


def _save(folder, run, alpha, seed):
    bundle = registry.load(str(folder))
    module = adapters.AdaptedSynthesis(ta.base_synthesis(bundle), adapters.AdapterConfig(), bundle.manifest["M"])
    torch.manual_seed(seed)
    with torch.no_grad():  # adapters that change the output, as trained ones do
        for st in module.adapters.values():
            st.up_weight.normal_(0, 0.02)
    run.mkdir()
    adapters.save(module, run / ta.ADAPTERS_FILE, {"model": MODEL, "model_id": bundle.model_id, "alpha": alpha,
                                                   "unseen_domain": "webcam", "steps": 0})


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    plain = _stripped_copy(root / "plain" / MODEL)
    adapted = _stripped_copy(root / "adapted" / MODEL)
    _save(adapted, root / "run", 600.0, 0)
    _save(adapted, root / "run0", 0.0, 1)
    ta.install(root / "run", root / "run0", adapted)
    registry._load.cache_clear()
    return {"plain": plain, "adapted": adapted}


@pytest.fixture(scope="module")
def crop(face_rgb):
    return FaceCropper().crop(face_rgb)[0]


def test_the_edges_bytes_are_identical_with_adapters_in_the_bundle_or_not(bundles, crop):
    a = EdgeEncoder(str(bundles["plain"])).encode(crop, ARCFACE_112)
    b = EdgeEncoder(str(bundles["adapted"])).encode(crop, ARCFACE_112)
    assert a == b
    assert registry.load(str(bundles["plain"])).model_id == registry.load(str(bundles["adapted"])).model_id


def test_adapters_off_is_the_base_decoder_and_on_reports_the_gate(bundles, crop):
    data = EdgeEncoder(str(bundles["plain"])).encode(crop, ARCFACE_112)
    base = CloudDecoder([str(bundles["plain"])]).decode(data)
    off = CloudDecoder([str(bundles["adapted"])], adapters="off").decode(data)
    on = CloudDecoder([str(bundles["adapted"])], adapters="on").decode(data)
    pixel = CloudDecoder([str(bundles["adapted"])], adapters="ablation").decode(data)
    default = CloudDecoder([str(bundles["adapted"])]).decode(data)  # off unless asked for
    assert np.array_equal(base.image, off.image) and base.domain_weights is None and off.domain_weights is None
    assert np.array_equal(default.image, base.image) and default.domain_weights is None
    assert not np.array_equal(on.image, base.image) and not np.array_equal(on.image, pixel.image)
    assert list(on.domain_weights) == ["source", "nir", "far", "jpeg"]
    assert sum(on.domain_weights.values()) == pytest.approx(1.0, abs=1e-5)


def test_the_oracle_decodes_with_one_domains_adapter(bundles, crop):
    dec = CloudDecoder([str(bundles["adapted"])], adapters="on")
    data = EdgeEncoder(str(bundles["plain"])).encode(crop, ARCFACE_112)
    nir = dec.decode(data, "nir")
    assert nir.domain_weights == {"source": 0.0, "nir": 1.0, "far": 0.0, "jpeg": 0.0}
    assert not np.array_equal(nir.image, dec.decode(data, "far").image)
    with pytest.raises(ValueError, match="no adapter for domain 'webcam'"):
        dec.decode(data, "webcam")
    with pytest.raises(ValueError, match="adapters must be one of"):
        CloudDecoder([str(bundles["adapted"])], adapters="maybe")


def test_a_manifest_that_names_adapters_without_their_sha256_is_refused(bundles, tmp_path):
    folder = shutil.copytree(bundles["adapted"], tmp_path / MODEL)
    m = json.loads((folder / "manifest.json").read_text())
    m["files"].pop(ta.ABLATION_FILE)
    (folder / "manifest.json").write_text(json.dumps(m))
    from facelink.shared.detection import IntegrityError
    with pytest.raises(IntegrityError, match="no sha256"):
        registry.load(str(folder))


def _old_messages():
    """Recognition and the stream's messages as a client built before the adapter fields knows them."""
    fdp = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(fdp)
    for msg in fdp.message_type:
        drop = {"Recognition": "domain_weights", "CodecModel": "domains"}.get(msg.name)
        if drop:
            kept = [f for f in msg.field if f.name != drop]
            del msg.field[:]
            msg.field.extend(kept)
    kept = [m for m in fdp.message_type if m.name != "DomainWeight"]
    del fdp.message_type[:]
    fdp.message_type.extend(kept)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    get = lambda n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"facelink.v1.{n}"))  # noqa: E731
    return get("RecognizeRequest"), get("RecognizeResponse"), get("ModelInfoRequest"), get("ModelInfoResponse")


def _serve(work, folder, *extra):
    ready = work / "ready.json"
    proc = subprocess.Popen([sys.executable, "-m", "facelink.cloud.cli", "serve", "--port", "0", "--gallery",
                             str(work / "gallery.db"), "--ready-file", str(ready), "--model", str(folder), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    while not ready.exists():
        if proc.poll() is not None or time.time() - t0 > 120:
            proc.kill()
            pytest.fail(f"server did not start: {proc.stdout.read()}")
        time.sleep(0.2)
    return proc, f"127.0.0.1:{json.loads(ready.read_text())['port']}"


@pytest.mark.parametrize("flag", [["--adapters"], []], ids=["adapters", "default-off"])
def test_server_reports_gate_and_domains_and_an_old_client_keeps_working(bundles, crop, tmp_path, flag):
    proc, target = _serve(tmp_path, bundles["adapted"], *flag)
    try:
        data = EdgeEncoder(str(bundles["plain"])).encode(crop, ARCFACE_112)
        with grpc.insecure_channel(target) as ch:
            grpc.channel_ready_future(ch).result(timeout=30)
            new = ch.stream_stream("/facelink.v1.FaceLink/Recognize", request_serializer=pb.RecognizeRequest.
                                   SerializeToString, response_deserializer=pb.RecognizeResponse.FromString)
            (r,) = list(new(iter([pb.RecognizeRequest(id="a", bitstream=data)])))
            info = ch.unary_unary("/facelink.v1.FaceLink/GetModelInfo", request_serializer=pb.ModelInfoRequest.
                                  SerializeToString, response_deserializer=pb.ModelInfoResponse.FromString)(
                pb.ModelInfoRequest())
            OldReq, OldResp, OldInfoReq, OldInfo = _old_messages()
            old = ch.stream_stream("/facelink.v1.FaceLink/Recognize", request_serializer=OldReq.SerializeToString,
                                   response_deserializer=OldResp.FromString)
            (o,) = list(old(iter([OldReq(id="b", bitstream=data)])))
            old_info = ch.unary_unary("/facelink.v1.FaceLink/GetModelInfo", request_serializer=OldInfoReq.
                                      SerializeToString, response_deserializer=OldInfo.FromString)(OldInfoReq())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert r.WhichOneof("outcome") == "result" and r.result.face_found
    weights = {w.domain: w.weight for w in r.result.domain_weights}
    domains = list(info.models[0].domains)
    if not flag:
        assert weights == {} and domains == []
    else:
        assert list(weights) == ["source", "nir", "far", "jpeg"] and sum(weights.values()) == pytest.approx(1, 1e-5)
        assert domains == ["source", "nir", "far", "jpeg"]
    assert o.WhichOneof("outcome") == "result" and o.result.face_found and o.result.model_id == r.result.model_id
    assert old_info.models[0].model_id == info.models[0].model_id
