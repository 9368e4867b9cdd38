"""Domain adapters and gate: zero adapters leave the decoder unchanged, the stacked form is the per-domain sum,
the size budget holds for every committed rate point, and the file round-trips."""
import numpy as np
import pytest
import torch

from facelink.cloud.serving import adapters
from facelink.cloud.serving.codec_model import build, load_synthesis
from facelink.shared import registry

RATE_POINTS = ("face-ipr-q0", "face-ipr-q2", "face-ipr-q4")


def _g_s(name="face-ipr-q2"):
    b = registry.load(name)
    m = b.manifest
    return load_synthesis(build(m["architecture"], m["N"], m["M"]), b.weights).g_s.eval(), m["M"]


def _y_hat(m, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(0, 2, (2, m, 8, 8)).astype(np.float32)).round()


def test_zero_adapters_leave_the_base_decoder_bit_identical():
    g_s, m = _g_s()
    module = adapters.AdaptedSynthesis(g_s, adapters.AdapterConfig(), m).eval()
    y = _y_hat(m)
    with torch.no_grad():
        base = g_s(y)
        out, w = module(y)
    assert torch.equal(base, out)
    assert w.shape == (2, 4) and torch.allclose(w.sum(1), torch.ones(2))


@pytest.mark.parametrize("name", RATE_POINTS)
def test_adapters_and_gate_stay_within_ten_percent_of_g_s(name):
    g_s, m = _g_s(name)
    module = adapters.AdaptedSynthesis(g_s, adapters.AdapterConfig(), m)
    assert 0 < module.params_ratio() <= 0.10


@pytest.mark.parametrize("name", RATE_POINTS)
def test_the_training_configurations_adapters_and_gate_stay_within_ten_percent_of_g_s(name):
    from pathlib import Path

    from facelink.cloud.training.train_adapters import AdapterTrainConfig
    from facelink.shared import config as cfgmod

    yaml = Path(__file__).resolve().parents[1] / "cloud" / "training" / "configs" / "adapters.yaml"
    g_s, m = _g_s(name)
    module = adapters.AdaptedSynthesis(g_s, cfgmod.load(AdapterTrainConfig, yaml).adapter_config(), m)
    assert 0 < module.params_ratio() <= 0.10


def test_stacked_adapters_compute_the_gate_weighted_sum_of_each_domains_adapter():
    torch.manual_seed(0)
    st = adapters.StackedAdapters(channels=6, domains=3, width=2, kernel=3)
    with torch.no_grad():
        st.up_weight.normal_()
        st.up_bias.normal_()
    h = torch.randn(2, 6, 5, 5)
    w = torch.softmax(torch.randn(2, 3), 1)
    got = st(h, w)
    want = torch.zeros_like(h)
    for d in range(3):
        down = torch.nn.functional.conv2d(h, st.down.weight[2 * d:2 * d + 2], st.down.bias[2 * d:2 * d + 2])
        a = torch.nn.functional.conv2d(torch.nn.functional.gelu(down), st.up_weight[:, 2 * d:2 * d + 2], padding=1)
        want += w[:, d, None, None, None] * (a + st.up_bias[d][None, :, None, None])
    assert torch.allclose(got, want, atol=1e-5)


def test_one_hot_weights_select_one_adapter_and_the_gate_is_bypassed():
    g_s, m = _g_s()
    module = adapters.AdaptedSynthesis(g_s, adapters.AdapterConfig(), m).eval()
    with torch.no_grad():
        for st in module.adapters.values():
            st.up_bias.normal_()
    y = _y_hat(m)
    one_hot = torch.tensor([[0.0, 1.0, 0.0, 0.0]] * 2)
    with torch.no_grad():
        out, w = module(y, one_hot)
        other, _ = module(y, torch.tensor([[0.0, 0.0, 1.0, 0.0]] * 2))
    assert torch.equal(w, one_hot) and not torch.equal(out, other)


def test_file_round_trip_keeps_config_weights_and_provenance(tmp_path):
    g_s, m = _g_s()
    cfg = adapters.AdapterConfig(sites=(3, 5), width=4, kernel=3)
    module = adapters.AdaptedSynthesis(g_s, cfg, m)
    with torch.no_grad():
        for n, p in module.named_parameters():
            if not n.startswith("g_s."):
                p.add_(0.01)
    path = tmp_path / "adapters.safetensors"
    adapters.save(module, path, {"steps": 7})
    g_s2, _ = _g_s()
    loaded = adapters.load(path, g_s2, m).eval()
    module.eval()
    y = _y_hat(m, 1)
    with torch.no_grad():
        assert torch.equal(module(y)[0], loaded(y)[0])
    assert adapters.read_config(path) == (cfg, {"steps": 7})


def test_bad_configurations_and_files_are_clear_errors(tmp_path):
    g_s, m = _g_s()
    with pytest.raises(ValueError, match="before its last module"):
        adapters.AdaptedSynthesis(g_s, adapters.AdapterConfig(sites=(6,)), m)
    with pytest.raises(ValueError, match="odd"):
        adapters.AdapterConfig(kernel=2)
    with pytest.raises(ValueError, match="distinct domains"):
        adapters.AdapterConfig(domains=("source", "source"))
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a facelink adapters file"):
        adapters.load(tmp_path / "other.safetensors", g_s, m)


def test_a_gate_that_pools_mean_and_std_on_normalised_latents_round_trips(tmp_path):
    g_s, m = _g_s()
    cfg = adapters.AdapterConfig(gate_pool="meanstd", gate_norm=True)
    module = adapters.AdaptedSynthesis(g_s, cfg, m).eval()
    y = _y_hat(m, 2)
    module.gate.set_normalisation(y * 3 + 1)
    assert torch.allclose(module.gate.in_mean, (y * 3 + 1).mean(dim=(0, 2, 3)))
    assert module.gate.fc.in_features == 2 * cfg.gate_channels and 0 < module.params_ratio() <= 0.10
    path = tmp_path / "adapters.safetensors"
    adapters.save(module, path)
    loaded = adapters.load(path, _g_s()[0], m).eval()
    with torch.no_grad():
        assert torch.equal(module.gate_weights(y), loaded.gate_weights(y))
    assert adapters.read_config(path)[0] == cfg
    with pytest.raises(ValueError, match="gate_pool"):
        adapters.AdapterConfig(gate_pool="max")
    stats = adapters.AdaptedSynthesis(g_s, adapters.AdapterConfig(gate_stats=True), m).eval()
    assert stats.gate.fc.in_features == stats.config.gate_channels + 2 * m
    with torch.no_grad():
        assert torch.allclose(stats.gate_weights(y).sum(1), torch.ones(2))


def test_a_file_written_before_the_gate_options_reads_with_their_defaults():
    import json

    old = {k: v for k, v in json.loads(adapters.AdapterConfig().to_json()).items() if k not in
           ("gate_pool", "gate_norm", "gate_stats")}
    cfg = adapters.AdapterConfig.from_json(json.dumps(old))
    assert cfg.gate_pool == "mean" and cfg.gate_norm is False and cfg.gate_stats is False
