"""Capture domains: deterministic per image, documented parameter ranges, and the held-out domain kept apart."""
import numpy as np
import pytest

from facelink.cloud.training import domains


def _face(seed=0):
    rng = np.random.default_rng(seed)
    base = np.linspace(40, 220, 112)[None, :, None] * np.ones((112, 1, 3))
    return np.clip(base + rng.normal(0, 20, (112, 112, 3)), 0, 255).astype(np.uint8)


def test_every_domain_is_deterministic_per_image_and_varies_between_images():
    im = _face()
    for d in domains.DOMAINS.values():
        a, pa = d.apply_with_parameters(im, "Some_Person/Some_Person_0001.jpg")
        b, pb = d.apply_with_parameters(im, "Some_Person/Some_Person_0001.jpg")
        assert a.shape == im.shape and a.dtype == np.uint8
        assert np.array_equal(a, b) and pa == pb
        if d.name != "source":
            assert not np.array_equal(a, im)
            params = [d.apply_with_parameters(im, f"k{i}")[1] for i in range(12)]
            assert len({tuple(sorted(p.items())) for p in params}) > 1


def test_source_is_the_identity_and_does_not_alias_its_input():
    im = _face()
    out = domains.get_domain("source").apply(im, "x")
    assert np.array_equal(out, im) and out is not im


def test_nir_is_grey_and_darker():
    im = _face()
    out = domains.get_domain("nir").apply(im, "x")
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    assert out.mean() < 0.6 * im.mean()


def test_parameters_lie_in_their_ranges():
    im = _face()
    for i in range(20):
        p = domains.get_domain("far").apply_with_parameters(im, str(i))[1]
        assert domains.FAR_SIDE[0] <= p["side"] <= domains.FAR_SIDE[1]
        p = domains.get_domain("jpeg").apply_with_parameters(im, str(i))[1]
        assert domains.JPEG_QUALITY[0] <= p["quality"] <= domains.JPEG_QUALITY[1]
        p = domains.get_domain("nir").apply_with_parameters(im, str(i))[1]
        assert domains.NIR_GAIN[0] <= p["gain"] <= domains.NIR_GAIN[1]


def test_far_loses_detail():
    im = _face()
    out = domains.get_domain("far").apply(im, "x").astype(float)
    high = lambda a: np.abs(np.diff(a, axis=1)).mean()  # noqa: E731
    assert high(out) < 0.5 * high(im.astype(float))


def test_the_unseen_domain_is_held_out_and_source_comes_first():
    assert domains.UNSEEN not in domains.TRAINED
    assert domains.TRAINED[0] == "source" and len(domains.TRAINED) >= 4
    assert set(domains.TRAINED) | {domains.UNSEEN} == set(domains.DOMAINS)


def test_bad_input_and_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="unknown domain"):
        domains.get_domain("fog")
    with pytest.raises(ValueError, match="uint8"):
        domains.get_domain("nir").apply(np.zeros((8, 8, 3), np.float32), "x")
