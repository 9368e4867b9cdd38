"""Rebuilding a trainable codec from a committed rate point (``init_from: registry:NAME``)."""
import numpy as np
import pytest
import torch

from facelink.cloud.training.export import export_tables, reference_model
from facelink.cloud.training.from_registry import init_state, stored_z_pmf, trainable_model
from facelink.cloud.training.train import TrainConfig
from facelink.shared import config, registry

NAME = "face-ipr-q1"


@pytest.fixture(scope="module")
def rebuilt():
    return trainable_model(NAME)


def test_rebuilt_model_computes_what_the_rate_point_computes(rebuilt):
    model, report = rebuilt
    bundle = registry.load(NAME)
    ref = reference_model(bundle)
    assert report["model_id"] == bundle.model_id
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = ref.g_a(x)
        # g_a's GDNs are trainable again: β and γ come back through their reparametrization
        assert torch.allclose(model.g_a(x), y, atol=1e-5)
        z = ref.h_a(y).round()
        assert torch.equal(model.h_a(y), ref.h_a(y))
        assert torch.equal(model.h_s(z), ref.h_s(z)) and torch.equal(model.g_s(y), ref.g_s(y))
    assert all(p.requires_grad for p in model.g_a.parameters())


def test_hyper_latent_density_is_refitted_to_the_stored_tables(rebuilt):
    model, report = rebuilt
    stored = registry.load(NAME).tables
    assert 0 <= report["z_fit_bits"] < 0.5  # summed over 64 channels: a few thousandths of a bit each
    again = export_tables(model)
    assert np.array_equal(again.z.cdf_lengths, stored.z.cdf_lengths)
    assert np.array_equal(again.z.offsets, stored.z.offsets)
    pmf, _, lengths = stored_z_pmf(stored)
    assert np.allclose(pmf.sum(axis=1), 1.0, atol=1e-3) and (lengths > 0).all()


def test_training_starts_from_a_registry_rate_point(tmp_path):
    from facelink.cloud.training.train import train

    base = {"steps": 1, "batch_size": 2, "max_images": 6, "threads": 1, "face_crop_fraction": 1.0,
            "alpha": 10.0, "init_from": f"registry:{NAME}"}
    start = init_state(f"registry:{NAME}")
    final = train(config.from_mapping(TrainConfig, base), tmp_path / "run")
    after = torch.load(final, weights_only=False)["model"]
    g_s = [k for k in start if k.startswith("g_s.") and k.endswith("weight")]
    # one small step from the rate point: close to where it started, not a fresh initialisation
    assert all((after[k] - start[k]).abs().max() < 1e-2 for k in g_s)
    with pytest.raises(config.ConfigError, match="refitted"):
        config.from_mapping(TrainConfig, {**base, "train_only": "decoder"})
    with pytest.raises(Exception, match="no-such-model"):
        init_state("registry:no-such-model")
