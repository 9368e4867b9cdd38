"""Adapter training: the configuration's schema, λ and α from the rate point, a real (tiny) run that resumes to the
same result, frozen base decoder, and installation into a rate point's bundle with sha256-checked manifest entries."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from facelink.cloud.serving import adapters
from facelink.cloud.training import train_adapters as ta
from facelink.shared import config as cfgmod
from facelink.shared import registry

# lr_drop_at 1 and no teacher forcing: schedules that do not depend on the total steps, so a 2-step run resumed to
# 4 steps is the 4-step run.
TINY = {"model": "face-ipr-q0", "images": 3, "steps": 4, "batch_size": 2, "checkpoint_every": 2, "lr_drop_at": 1.0,
        "teacher_forcing": 0.0}


def _cfg(**kw):
    return cfgmod.from_mapping(ta.AdapterTrainConfig, {**TINY, **kw})


def test_unknown_keys_and_bad_values_are_errors():
    with pytest.raises(cfgmod.ConfigError, match="unknown key"):
        _cfg(learning_rate=1)
    with pytest.raises(cfgmod.ConfigError, match="held-out"):
        _cfg(domains=["source", "nir", "webcam"])
    with pytest.raises(cfgmod.ConfigError, match="start with source"):
        _cfg(domains=["nir", "source"])
    with pytest.raises(cfgmod.ConfigError, match="unknown domain"):
        _cfg(domains=["source", "fog"])
    with pytest.raises(cfgmod.ConfigError, match="before its last module|odd"):
        _cfg(kernel=2)
    assert ta.main(["run", "--out", "/nonexistent/x", "--set", "alpha=-1"]) == 2


def test_lambda_and_alpha_default_to_the_rate_points_own():
    b = registry.load("face-ipr-q0")
    assert ta.loss_weights(_cfg(), b) == (b.manifest["training"]["lambda"], b.manifest["training"]["alpha"])
    assert ta.loss_weights(_cfg(alpha=0.0), b)[1] == 0.0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three tiny real runs on the committed q0: IPR straight through, IPR interrupted and resumed, α = 0."""
    root = tmp_path_factory.mktemp("runs")
    mp = pytest.MonkeyPatch()
    mp.setenv("FACELINK_RUNS", str(root))
    try:
        straight = ta.train(_cfg(), root / "ipr")
        ta.train(_cfg(steps=2), root / "part")
        cfg_dict = json.loads((root / "part" / "config.json").read_text())
        assert cfg_dict["steps"] == 2
        ckpt = torch.load(root / "part" / "checkpoint.pt", weights_only=False)
        ckpt["config"]["steps"] = 4  # the same run, asked for more steps after an interruption at step 2
        torch.save(ckpt, root / "part" / "checkpoint.pt")
        resumed = ta.train(_cfg(), root / "part", resume=True)
        pixel = ta.train(_cfg(alpha=0.0), root / "pix")
    finally:
        mp.undo()
    return root, straight, resumed, pixel


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(runs):
    _, straight, resumed, _ = runs
    a, b = load_file(str(straight)), load_file(str(resumed))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_training_moves_the_adapters_and_records_its_provenance(runs):
    root, straight, _, pixel = runs
    config, info = adapters.read_config(straight)
    assert config.domains == ("source", "nir", "far", "jpeg")
    assert info["model"] == "face-ipr-q0" and info["steps"] == 4 and info["alpha"] == 600.0
    assert info["unseen_domain"] == "webcam" and info["cpu_seconds"] > 0
    assert adapters.read_config(pixel)[1]["alpha"] == 0.0
    up = [v for k, v in load_file(str(straight)).items() if k.endswith("up_weight")]
    assert any(float(v.abs().sum()) > 0 for v in up)
    rows = (root / "ipr" / "log.csv").read_text().splitlines()
    assert rows[0].split(",") == ta.LOG_COLUMNS and len(rows) == 5


def test_resume_with_another_configuration_is_refused(runs):
    root, *_ = runs
    with pytest.raises(cfgmod.ConfigError, match="another configuration"):
        ta.train(_cfg(gamma=0.5), root / "ipr", resume=True)


def test_install_lists_the_files_with_sha256_and_the_registry_checks_them(runs, tmp_path):
    root, *_ = runs
    folder = tmp_path / "face-ipr-q0"
    shutil.copytree(registry.load("face-ipr-q0").path, folder)
    for name in (ta.ADAPTERS_FILE, ta.ABLATION_FILE):
        (folder / name).unlink(missing_ok=True)
    before = json.loads((folder / "manifest.json").read_text())
    for name in (ta.ADAPTERS_FILE, ta.ABLATION_FILE):
        before["files"].pop(name, None)
    before.pop("adapters", None)
    (folder / "manifest.json").write_text(json.dumps(before))
    ta.install(root / "ipr", root / "pix", folder)
    m = json.loads((folder / "manifest.json").read_text())
    assert {k: m["files"][k] for k in before["files"]} == before["files"]  # existing entries untouched
    assert set(m["files"]) - set(before["files"]) == {ta.ADAPTERS_FILE, ta.ABLATION_FILE}
    assert m["adapters"]["domains"] == ["source", "nir", "far", "jpeg"] and m["adapters"]["unseen_domain"] == "webcam"
    registry.load(str(folder))  # sha256s check
    registry._load.cache_clear()
    (folder / ta.ADAPTERS_FILE).write_bytes((folder / ta.ADAPTERS_FILE).read_bytes() + b"x")
    from facelink.shared.detection import IntegrityError
    with pytest.raises(IntegrityError, match="adapters.safetensors"):
        registry.load(str(folder), verify=True)
    with pytest.raises(ValueError, match="not an α = 0 ablation"):
        ta.install(root / "ipr", root / "ipr", folder)


def test_the_fast_latent_is_what_the_cloud_decodes_from_the_edges_container(face_rgb):
    import numpy as np

    from facelink.edge.encoder import EdgeEncoder
    from facelink.shared import bitstream, codec
    from facelink.shared.alignment import ARCFACE_112

    enc = EdgeEncoder("face-ipr-q2")
    crop = np.ascontiguousarray(face_rgb[:112, :112])
    data = enc.encode(crop, ARCFACE_112)
    decoded = codec.decompress_latents(enc.bundle.tables, bitstream.unpack(data))
    assert np.array_equal(ta.EdgeLatents(enc.bundle)(crop), decoded)


def test_holdout_keeps_every_domain_of_an_image_on_one_side():
    import numpy as np

    train, held = ta.holdout_split(40, 4, 0.3, seed=3)
    assert len(held) == 12 and len(train) == 28 and not set(train) & set(held)
    assert set(np.unique(held // 4)) == set(held // 4) and all(np.bincount(held // 4)[held // 4] == 4)
    assert np.array_equal(ta.holdout_split(40, 4, 0.3, seed=3)[1], held)
    assert len(ta.holdout_split(40, 4, 0.0, seed=3)[1]) == 0
    with pytest.raises(cfgmod.ConfigError, match="holdout"):
        _cfg(holdout=1.0)
    with pytest.raises(cfgmod.ConfigError, match="freeze_gate"):
        _cfg(freeze_gate=True)


def test_gate_pretraining_learns_separable_domains_and_reports_held_out_accuracy():
    torch.manual_seed(0)
    d = torch.arange(400) % 4
    y = torch.randn(400, 8, 4, 4) * 0.2 + (d.float() - 1.5)[:, None, None, None] * torch.linspace(-1, 1, 8)[None, :,
                                                                                                         None, None]
    gate = adapters.DomainGate(8, 4, 8, 3)
    result = ta.pretrain_gate(gate, y[:320], d[:320], _cfg(gate_epochs=30, gate_batch_size=32), (y[320:], d[320:]))
    assert result["holdout_accuracy"] >= 0.95 and result["holdout_crops"] == 80
    assert sum(map(sum, result["holdout_confusion"])) == 80


def test_a_frozen_pretrained_gate_stays_and_the_held_out_images_are_measured(tmp_path, monkeypatch):
    monkeypatch.setenv("FACELINK_RUNS", str(tmp_path))
    cfg = _cfg(images=4, gate_epochs=2, gate_batch_size=4, freeze_gate=True, holdout=0.25)
    final = ta.train(cfg, tmp_path / "frozen")
    gate = json.loads((tmp_path / "frozen" / "gate.json").read_text())
    assert gate["epochs"] == 2 and "holdout_accuracy" in gate
    held = json.loads((tmp_path / "frozen" / "holdout.json").read_text())
    assert held["crops"] == 4 and set(held["psnr_adapters"]) == {"source", "nir", "far", "jpeg"}
    ckpt = torch.load(tmp_path / "frozen" / "checkpoint.pt", weights_only=False)
    assert len(ckpt["opt"]["param_groups"][0]["params"]) == 4 * len(cfg.sites)  # the adapters' tensors, no gate's
    _, info = adapters.read_config(final)
    assert info["holdout_images"] == 1 and held["crops"] == 4 * info["holdout_images"]


def test_the_gate_command_trains_a_gate_alone_and_reports_held_out_accuracy(tmp_path, monkeypatch):
    monkeypatch.setenv("FACELINK_RUNS", str(tmp_path))
    out = tmp_path / "gate.json"
    args = ["gate", "--set", "model=face-ipr-q0", "images=4", "holdout=0.25", "gate_epochs=2", "gate_batch_size=4",
            "gate_channels=4", "--out", str(out)]
    assert ta.main(args) == 0
    result = json.loads(out.read_text())
    assert result["gate_channels"] == 4 and result["epochs"] == 2 and result["holdout_crops"] == 4
    assert 0.0 <= result["holdout_accuracy"] <= 1.0 and result["parameters"] > 0
    assert ta.main(["gate", "--set", "model=face-ipr-q0", "gate_epochs=0"]) == 2


def test_whole_mode_fine_tunes_g_s_on_one_domain_and_logs_held_out_psnr(tmp_path, monkeypatch):
    monkeypatch.setenv("FACELINK_RUNS", str(tmp_path))
    cfg = _cfg(images=4, holdout=0.25, mode="whole", train_domains=["nir"], lr=1e-4, alpha=0.0, eval_every=2,
               eval_images=1)
    path = ta.train(cfg, tmp_path / "whole")
    assert path.name == ta.WHOLE_FILE and not (tmp_path / "whole" / ta.ADAPTERS_FILE).exists()
    bundle = registry.load("face-ipr-q0")
    g_s, info = ta.load_whole(path, bundle)
    assert info["train_domains"] == ["nir"] and info["mode"] == "whole" and info["steps"] == 4
    base = ta.base_synthesis(bundle)
    assert any(not torch.equal(a, b) for a, b in zip(g_s.state_dict().values(), base.state_dict().values()))
    rows = (tmp_path / "whole" / "eval.csv").read_text().splitlines()
    assert rows[0].split(",") == ["step", "cpu_seconds", "source", "nir", "far", "jpeg"]
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "2", "4"]
    with pytest.raises(ValueError, match="fine-tuned from model id"):
        ta.load_whole(path, registry.load("face-ipr-q2"))
    assert ta.main(["finish", "--run", str(tmp_path / "whole")]) == 0  # the same file from the last checkpoint
    assert ta.load_whole(path, bundle)[1]["steps"] == 4
    with pytest.raises(cfgmod.ConfigError, match="mode"):
        _cfg(mode="half")
    with pytest.raises(cfgmod.ConfigError, match="train_domains"):
        _cfg(train_domains=["webcam"])
    with pytest.raises(cfgmod.ConfigError, match="held-out"):
        _cfg(eval_every=5)


def test_a_run_can_start_from_another_runs_adapters_and_counts_its_cpu_time(runs, tmp_path, monkeypatch):
    root, _, _, pixel = runs
    monkeypatch.setenv("FACELINK_RUNS", str(root))
    start = load_file(str(pixel))
    final = ta.train(_cfg(init_from=str(pixel), steps=2, lr=0.0), tmp_path / "cont")  # lr 0: nothing moves
    _, info = adapters.read_config(final)
    assert info["init_from"]["steps"] == 4 and info["init_from"]["alpha"] == 0.0
    assert info["cpu_seconds_total"] >= info["cpu_seconds"] + info["init_from"]["cpu_seconds"] - 0.1
    ckpt = torch.load(tmp_path / "cont" / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 2
    got = load_file(str(final))
    assert got.keys() == start.keys() and all(torch.equal(got[k], start[k]) for k in got)
    with pytest.raises(cfgmod.ConfigError, match="another rate point or configuration"):
        ta.train(_cfg(init_from=str(pixel), width=4), tmp_path / "bad")


def test_identity_target_is_parsed_validated_and_maps_crops_to_their_images_source_crop():
    # clean by default (the domain-crop target cost nir 6.2 points at q2); domain stays selectable
    assert _cfg().identity_target == "clean" and _cfg(identity_target="domain").identity_target == "domain"
    yaml = Path(__file__).resolve().parents[1] / "cloud" / "training" / "configs" / "adapters.yaml"
    assert cfgmod.load(ta.AdapterTrainConfig, yaml).identity_target == "clean"
    with pytest.raises(cfgmod.ConfigError, match="identity_target"):
        _cfg(identity_target="gallery")
    assert ta.main(["run", "--out", "/nonexistent/x", "--set", "identity_target=noisy"]) == 2
    idx = torch.tensor([0, 5, 6, 11, 15])
    assert ta.identity_target_indices(idx, 4, "domain").tolist() == [0, 5, 6, 11, 15]
    assert ta.identity_target_indices(idx, 4, "clean").tolist() == [0, 4, 4, 8, 12]


def test_by_default_the_identity_term_embeds_the_untransformed_crop(runs, tmp_path, monkeypatch):
    from facelink.cloud.training.identity_loss import IdentityLoss

    root, *_ = runs
    monkeypatch.setenv("FACELINK_RUNS", str(root))  # the fixture's cached latents
    seen = {}
    forward = IdentityLoss.forward

    def spy(self, source, reconstruction, matrices, weights=None):
        seen.setdefault("targets", []).append(source.detach().clone())
        return forward(self, source, reconstruction, matrices, weights)

    monkeypatch.setattr(IdentityLoss, "forward", spy)
    cfg = _cfg(steps=3, batch_size=4, lr=0.0)  # the default target: clean
    ta.train(cfg, tmp_path / "clean")
    data = ta.coded_latents(cfg, registry.load(cfg.model))
    x = torch.from_numpy(data["x"]).permute(0, 3, 1, 2).float() / 255.0
    source, other = x[data["domain"] == 0], x[data["domain"] != 0]
    targets = torch.cat(seen["targets"])
    assert len(targets) == 12
    for t in targets:  # every target is an image's source crop, none a domain-transformed one
        assert any(torch.equal(t, s) for s in source) and not any(torch.equal(t, o) for o in other)


# ----------------------------------------------------------------------------------------------------------------
# A variable-rate model (core v2): one set of adapters and one gate for every quality
# ----------------------------------------------------------------------------------------------------------------
def test_a_variable_rate_latent_is_what_the_cloud_decodes_at_that_quality(face_rgb):
    import numpy as np

    from facelink.edge.encoder import EdgeEncoder
    from facelink.shared import bitstream, codec
    from facelink.shared.alignment import ARCFACE_112

    enc = EdgeEncoder("face-v2")
    crop = np.ascontiguousarray(face_rgb[:112, :112])
    latent = ta.EdgeLatents(enc.bundle)
    for q in (0.0, 2.5, 7.0):
        decoded = codec.decompress_latents(enc.bundle.tables, bitstream.unpack(enc.encode(crop, ARCFACE_112, q)))
        assert np.array_equal(latent(crop, q), decoded)
    with pytest.raises(ValueError, match="quality"):
        latent(crop)


def test_variable_rate_qualities_lambda_and_alpha():
    from facelink.cloud.serving import variable_rate

    vr, rp = registry.load("face-v2"), registry.load("face-ipr-q0")
    lmbda, alpha = ta.loss_weights(_cfg(model="face-v2"), vr)
    assert lmbda == variable_rate.lmbda(vr.manifest["default_quality"])
    assert alpha == vr.manifest["training"]["config"]["stages"][-1]["alpha"]
    assert ta.training_qualities(_cfg(model="face-v2"), vr) == [float(q) for q in range(8)]
    assert ta.training_qualities(_cfg(model="face-v2", qualities=[0, 2.5]), vr) == [0.0, 2.5]
    assert ta.training_qualities(_cfg(), rp) is None
    with pytest.raises(cfgmod.ConfigError, match="rate point"):
        ta.training_qualities(_cfg(qualities=[1]), rp)
    with pytest.raises(cfgmod.ConfigError, match="outside"):
        ta.training_qualities(_cfg(model="face-v2", qualities=[9]), vr)
    with pytest.raises(cfgmod.ConfigError, match="qualities"):
        _cfg(model="face-v2", qualities=[])


def test_adapters_train_on_a_variable_rate_model_and_decode_as_the_cloud_does(tmp_path, monkeypatch, face_rgb):
    """A tiny real run on face-v2: its cached latents are the inverse-gained ŷ at each image's drawn quality (all of
    an image's domains at one), the installed adapters decode a container exactly as the cloud's decoder with
    adapters on does, and the base decoder is untouched."""
    import numpy as np

    from facelink.cloud.serving import variable_rate
    from facelink.cloud.serving.decoder import CloudDecoder
    from facelink.edge.encoder import EdgeEncoder
    from facelink.shared.alignment import ARCFACE_112

    monkeypatch.setenv("FACELINK_RUNS", str(tmp_path / "runs"))
    cfg = _cfg(model="face-v2", qualities=[0, 3, 6], steps=3, alpha=0.0)
    final = ta.train(cfg, tmp_path / "vr")
    _, info = adapters.read_config(final)
    assert info["qualities"] == [0.0, 3.0, 6.0] and info["model"] == "face-v2"
    bundle = registry.load("face-v2")
    data = ta.coded_latents(cfg, bundle)
    q = data["quality"].reshape(-1, len(cfg.domains))
    assert (q == q[:, :1]).all() and set(q[:, 0]) <= {0.0, 3.0, 6.0}
    latent, model = ta.EdgeLatents(bundle), ta.vr_model(bundle)
    x0 = np.ascontiguousarray(data["x"][0])
    expect = variable_rate.apply_inverse_gain(model, torch.from_numpy(latent(x0, float(q[0, 0])))[None], q[0, 0])
    assert torch.equal(torch.from_numpy(data["y_hat"][0]), expect[0])

    folder = tmp_path / "face-v2"
    shutil.copytree(bundle.path, folder)
    ta.install(tmp_path / "vr", folder=folder)
    crop = np.ascontiguousarray(face_rgb[:112, :112])
    container = EdgeEncoder("face-v2").encode(crop, ARCFACE_112, 3.0)
    registry._load.cache_clear()
    try:
        on = CloudDecoder([str(folder)], adapters="on", device="cpu").decode(container)
        off = CloudDecoder([str(folder)], adapters="off", device="cpu").decode(container)
        shipped = CloudDecoder(["face-v2"], device="cpu").decode(container)
        module = adapters.load(final, ta.base_synthesis(bundle), bundle.manifest["M"]).eval()
        y = variable_rate.apply_inverse_gain(model, torch.from_numpy(latent(crop, 3.0))[None], 3.0)
        with torch.no_grad():
            x, w = module(y)
        mine = (x.clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)[:112, :112]
    finally:
        registry._load.cache_clear()
    assert np.abs(on.image.astype(int) - mine.astype(int)).max() <= 1
    assert set(on.domain_weights) == set(cfg.domains)
    assert np.array_equal(off.image, shipped.image) and off.domain_weights is None
    assert not np.array_equal(on.image, off.image)  # the adapters moved
