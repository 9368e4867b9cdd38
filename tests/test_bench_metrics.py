"""BD-rate and bpp-at-parity on synthetic curves with known answers."""
import math

import numpy as np
import pytest

from facelink.benchmarks import metrics

ACC = np.array([0.70, 0.85, 0.93, 0.97, 0.985, 0.99])
BPP = np.array([0.05, 0.08, 0.12, 0.2, 0.35, 0.6])


@pytest.mark.parametrize("method", metrics.METHODS)
@pytest.mark.parametrize("factor", [0.5, 0.38, 1.0, 2.0])
def test_bd_rate_of_a_scaled_curve_is_the_scale(method, factor):
    # The test codec needs exactly `factor` times the bits at every accuracy: BD-rate = 100 (factor - 1).
    got = metrics.bd_rate(BPP, ACC, BPP * factor, ACC, method)
    assert got == pytest.approx(100 * (factor - 1), abs=1e-9)


def test_bd_rate_partial_overlap_and_sign():
    # Test curve covers only the upper part of the anchor's accuracy range, at 70 % of the bits. The curves are
    # log-linear, which PCHIP reproduces exactly from any subset of nodes, so only the common range counts.
    r = np.geomspace(0.05, 1.0, 7)
    acc = 0.6 + 0.1 * np.log(r / 0.05)
    got = metrics.bd_rate(r, acc, r[3:] * 0.7, acc[3:])
    assert got == pytest.approx(-30.0, abs=1e-6)
    assert metrics.bd_rate(r[3:] * 0.7, acc[3:], r, acc) == pytest.approx(100 * (1 / 0.7 - 1), abs=1e-6)


def test_bd_rate_undefined_cases():
    assert math.isnan(metrics.bd_rate(BPP, ACC, BPP[:1], ACC[:1]))  # one point
    assert math.isnan(metrics.bd_rate(BPP[:3], ACC[:3], BPP[3:], ACC[3:]))  # disjoint accuracy ranges


def test_bd_rate_log_linear_shift_matches_closed_form():
    # Anchor: acc = a + b ln(bpp). Test: same slope, shifted by d in ln(bpp) -> exactly exp(d) - 1.
    r = np.geomspace(0.05, 1.0, 7)
    acc = 0.5 + 0.1 * np.log(r / 0.05)
    d = -0.3
    assert metrics.bd_rate(r, acc, r * math.exp(d), acc) == pytest.approx(100 * (math.exp(d) - 1), abs=1e-6)
    assert metrics.bd_quality(r, acc, r * math.exp(d), acc) == pytest.approx(0.1 * 0.3, abs=1e-7)


def test_pareto_rule_drops_dominated_points():
    r, q = metrics.pareto_curve([0.4, 0.1, 0.2, 0.3, 0.2, 0.5], [0.95, 0.80, 0.90, 0.89, 0.85, 0.95])
    assert r.tolist() == [0.1, 0.2, 0.4]
    assert q.tolist() == [0.80, 0.90, 0.95]
    # A noisy, non-monotonic curve gives the same BD-rate as its clean Pareto version.
    noisy_r = np.append(BPP, [0.9])
    noisy_q = np.append(ACC, [0.988])  # costs more, less accurate than the last point: dropped
    assert metrics.bd_rate(BPP, ACC, noisy_r * 0.5, noisy_q) == pytest.approx(-50.0, abs=1e-9)


def test_parity_interpolates_on_own_curve():
    # acc linear in ln(bpp): acc = 0.9 + 0.05 ln(bpp / 0.1)  ->  acc 0.95 at bpp 0.1 e.
    r = np.array([0.05, 0.1, 0.2, 0.4, 0.8])
    acc = 0.9 + 0.05 * np.log(r / 0.1)
    p = metrics.bpp_at_parity(r, acc, reference_bpp=0.5, reference_quality=0.95)
    assert p.status == "interpolated"
    # PCHIP on exactly log-linear data is exact at the nodes and close between: within 1 %.
    assert p.bpp == pytest.approx(0.1 * math.e, rel=0.01)
    assert p.percent_of_reference == pytest.approx(100 * 0.1 * math.e / 0.5, rel=0.01)
    # On a node it is exact.
    p = metrics.bpp_at_parity(r, acc, reference_bpp=0.5, reference_quality=acc[2])
    assert p.bpp == pytest.approx(0.2, abs=1e-12) and p.percent_of_reference == pytest.approx(40.0)


def test_parity_of_the_reference_itself_is_100_percent():
    p = metrics.bpp_at_parity(BPP, ACC, reference_bpp=BPP[3], reference_quality=ACC[3])
    assert p.percent_of_reference == pytest.approx(100.0)


def test_parity_bounds_and_not_reached():
    up = metrics.bpp_at_parity(BPP, ACC, reference_bpp=0.5, reference_quality=0.6)
    assert up.status == "upper_bound" and up.bpp == pytest.approx(0.05) and up.percent_of_reference == 10.0
    no = metrics.bpp_at_parity(BPP, ACC, reference_bpp=0.5, reference_quality=0.995)
    assert no.status == "not_reached" and math.isnan(no.bpp) and no.best_quality == pytest.approx(max(ACC))
    assert no.to_dict()["bpp"] is None


def test_float_noise_in_accuracy_does_not_break_parity():
    # 0.98 reached as a mean of fold accuracies can come out as 0.9800000000000001.
    p = metrics.bpp_at_parity([0.1, 0.2, 0.4], [0.9, 0.98, 0.99], reference_bpp=0.4,
                              reference_quality=0.9800000000000001)
    assert p.status == "interpolated" and p.bpp == pytest.approx(0.2) and p.percent_of_reference == pytest.approx(50)
    r, q = metrics.pareto_curve([0.1, 0.2], [0.98, 0.9800000000000001])
    assert r.tolist() == [0.1]


def test_quality_at_rate_interpolates_inside_the_curve_only():
    rate, quality = [0.1, 0.2, 0.4], [0.90, 0.95, 0.97]
    assert metrics.quality_at_rate(rate, quality, 0.2) == pytest.approx(0.95)
    assert 0.95 < metrics.quality_at_rate(rate, quality, 0.3) < 0.97
    assert math.isnan(metrics.quality_at_rate(rate, quality, 0.05))  # no extrapolation
    assert math.isnan(metrics.quality_at_rate(rate, quality, 0.5))
    # a dominated point (more bits, less accuracy) is not part of the interpolant
    assert metrics.quality_at_rate([0.1, 0.2, 0.3], [0.90, 0.96, 0.94], 0.2) == pytest.approx(0.96)


def test_headline_compares_each_ipr_point_with_its_ablation_at_equal_bpp():
    from facelink.benchmarks import bench
    from facelink.benchmarks.results_io import ablation_table

    def codec(name, bpp, acc):
        return {"codec": name, "results": {"quality": [f"q{i}" for i in range(len(bpp))], "bpp": bpp,
                                           "accuracy": acc, "tar@far=1e-3": acc}}

    doc = {"codecs": [codec("facelink-iprb+roi", [0.1, 0.2, 0.5], [0.93, 0.96, 0.99]),
                      codec("facelink-pixb+roi", [0.1, 0.4], [0.92, 0.96]),
                      codec("facelink-pixb", [0.1, 0.4], [0.99, 0.99]),  # not the ablation behind the ROI
                      codec("hevc", [0.1, 0.4], [0.9, 0.98])],
           "reference": None, "uncompressed": {"accuracy": 0.98}}
    head = bench._headline(doc, ("hevc", 23))
    assert set(head["vs_ablation"]) == {"facelink-iprb+roi"}
    v = head["vs_ablation"]["facelink-iprb+roi"]
    assert v["ablation"] == "facelink-pixb+roi"
    first, second, third = v["points"]
    assert first["difference_points"] == pytest.approx(1.0)  # 93 against 92 % at 0.1 bpp
    assert 0 < second["difference_points"] < 4  # the ablation's curve lies between 92 and 96 % at 0.2 bpp
    assert third["difference_points"] is None and third["ablation_accuracy"] is None  # beyond the ablation's range
    assert v["bd_accuracy_points"] > 0
    for name, want in (("facelink-ipr", "facelink-pix"), ("facelink-iprf+roi", "facelink-pixf+roi"),
                       ("facelink-pixb", None), ("hevc+roi", None), ("facelink-msh", None)):
        assert bench.ablation_of(name) == want
    doc.update({"headline": head, "dataset": "lfw", "recognizer": "mobilefacenet", "protocol": "full-frame",
                "setting": "asymmetric", "name": "x"})
    table = ablation_table([doc])
    assert "| facelink-iprb+roi (facelink-pixb+roi) | +" in table and "0.100: +1.00 · " in table
    assert "0.500: outside the ablation's range" in table


def test_headline_compares_a_fine_tuned_ladder_with_the_one_it_started_from():
    """iprc was fine-tuned from iprb rate point by rate point: the report says what that gained at equal bpp."""
    from facelink.benchmarks import bench
    from facelink.benchmarks.results_io import ablation_table

    def codec(name, bpp, acc):
        return {"codec": name, "results": {"quality": [f"q{i}" for i in range(len(bpp))], "bpp": bpp,
                                           "accuracy": acc, "tar@far=1e-3": acc}}

    doc = {"codecs": [codec("facelink-iprc", [0.15, 0.3], [0.95, 0.97]),
                      codec("facelink-iprb", [0.1, 0.2, 0.4], [0.92, 0.94, 0.97]),
                      codec("hevc", [0.1, 0.4], [0.9, 0.98])],
           "reference": None, "uncompressed": {"accuracy": 0.98}}
    head = bench._headline(doc, ("hevc", 23))
    assert head["vs_ablation"] == {}  # pixc is not in this run
    v = head["vs_tuned_from"]["facelink-iprc"]
    assert v["tuned_from"] == "facelink-iprb" and set(head["vs_tuned_from"]) == {"facelink-iprc"}
    assert all(p["difference_points"] > 0 and p["tuned_from_accuracy"] < p["accuracy"] for p in v["points"])
    for name, want in (("facelink-pixc", "facelink-pixb"), ("facelink-iprb", None), ("hevc", None)):
        assert bench.tuned_from(name) == want
    doc.update({"headline": head, "dataset": "lfw", "recognizer": "mobilefacenet", "protocol": "face-crop",
                "setting": "asymmetric", "name": "x"})
    assert "| facelink-iprc (facelink-iprb) | +" in ablation_table([doc], "vs_tuned_from")
