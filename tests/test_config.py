"""Configuration files are checked against their schema: unknown keys and wrong types are errors; research
ladders expand into schema-checked training configurations."""
from pathlib import Path

import pytest

from facelink.cloud.serving.server import ServerConfig
from facelink.cloud.training import ladder, quality
from facelink.cloud.training.train import TrainConfig
from facelink.shared import config

CONFIGS = Path(__file__).resolve().parents[1] / "cloud" / "training" / "configs"


def test_shipped_configs_load():
    assert config.load(ServerConfig, CONFIGS.parents[1] / "serving" / "server.yaml").port == 50051
    assert config.load(TrainConfig, ladder.BASE_CONFIG).M == 128


@pytest.mark.parametrize("name", ladder.names())
def test_every_ladder_point_expands_and_validates(name):
    """Each point is a schema-checked TrainConfig whose λ is its name's quality on the one table (or, in a ladder
    with documented legacy names, written down), and names one model with family, label and relations."""
    lad = ladder.load(name)
    for point in lad.points:
        cfg = ladder.expand(name, point)
        assert isinstance(cfg, TrainConfig)
        q = int(point[1:])
        if not lad.legacy_names:
            assert cfg.lmbda == quality.lmbda(q)
        fields = ladder.manifest_fields(name, point)
        assert fields["family"] == lad.model_family and fields["label"] == lad.label
        assert fields["quality"] == quality.quality_of(cfg.lmbda)
        for ref in (fields["ablation_of"], fields["tuned_from"]):
            assert ref is None or ref.startswith("face-") and ref.endswith(f"-{point}")


def test_ladders_name_each_model_once():
    names = [ladder.load(n).model_name(p) for n in ladder.names() for p in ladder.load(n).points]
    assert len(names) == len(set(names))
    assert {"face-msh-q4", "face-ipr-q0", "face-ipr-q5"} <= set(names)  # the committed models have their ladders


@pytest.mark.parametrize("name", [n for n in ladder.names() if ladder.load(n).extends])
def test_an_extending_ladder_differs_from_its_parent_only_in_what_it_writes(name):
    """Ablations, controls and longer runs hold "the same but X" by construction: the keys a ladder writes."""
    lad = ladder.load(name)
    written = set(lad.recipe)
    for point, keys in lad.points.items():
        if point not in ladder.load(lad.extends).points:
            continue
        child = config.to_dict(ladder.expand(name, point))
        parent = config.to_dict(ladder.expand(lad.extends, point))
        differ = {k for k in child if child[k] != parent[k]}
        allowed = written | set(keys) | ({"lmbda"} if {"lmbda", "quality"} & set(keys) else set())
        assert differ <= allowed, (point, differ - allowed)


def _ladder_dir(tmp_path, text: str, name: str = "new"):
    (tmp_path / f"{name}.yaml").write_text(text)
    return tmp_path


@pytest.mark.parametrize("text, match", [
    ("label: a\ndescription: b\npoints: {q1: {}}\nablation: [ipr]\n", "unknown key.*ablation"),
    ("label: a\ndescription: b\npoints: {q1: {}}\nrecipe: {lmbda: 0.1}\n", "recipe"),
    ("label: a\ndescription: b\npoints: {q1: {lmbda: 0.0009}}\n", "legacy_names"),
    ("label: a\ndescription: b\npoints: {low: {}}\n", "not named q<k>"),
    ("label: a\ndescription: b\npoints: {q1: {}}\nextends: nowhere\n", "unknown ladder 'nowhere'"),
    ("label: a\npoints: {q1: {}}\n", "description"),
])
def test_a_bad_ladder_is_refused(tmp_path, text, match):
    with pytest.raises(config.ConfigError, match=match):
        ladder.load("new", _ladder_dir(tmp_path, text))


def test_a_ladder_with_an_unknown_training_key_is_refused(tmp_path):
    root = _ladder_dir(tmp_path, "label: a\ndescription: b\nrecipe: {alpah: 300.0}\npoints: {q1: {}}\n")
    with pytest.raises(config.ConfigError, match="ladder new point q1: unknown key.*alpah"):
        ladder.expand("new", "q1", root)
    root = _ladder_dir(tmp_path, "label: a\ndescription: b\npoints: {q9: {}}\n", "off")
    with pytest.raises(config.ConfigError, match="quality must be an integer in 0..8"):
        ladder.expand("off", "q9", root)


def test_train_cli_expands_a_ladder_point_and_reports_errors(capsys):
    from facelink.cloud.training import train

    assert train.main(["--ladder", "iprc", "--point", "q9", "--out", "unused"]) == 2
    assert "ladder 'iprc' has no point 'q9'; its points: q3, q1, q5, q2, q4" in capsys.readouterr().err
    assert train.main(["--ladder", "iprc", "--point", "q3", "--set", "alpah=1", "--out", "unused"]) == 2
    assert "unknown key(s) alpah" in capsys.readouterr().err


def test_quality_table_is_one_increasing_ladder():
    assert list(quality.LAMBDAS) == sorted(quality.LAMBDAS) and quality.lmbda(8) == 0.013
    assert quality.quality_of(0.0009) is None and quality.quality_of(0.0018) == 4
    with pytest.raises(ValueError):
        quality.lmbda(-1)


def test_unknown_key_is_an_error(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("port: 1\nthreshhold: 0.3\n")
    with pytest.raises(config.ConfigError, match="threshhold"):
        config.load(ServerConfig, p)


@pytest.mark.parametrize("data", [{"port": "80"}, {"threshold": "high"}, {"workers": 2.5}, {"models": "a"}])
def test_wrong_types_are_errors(data):
    with pytest.raises(config.ConfigError):
        config.from_mapping(ServerConfig, data)


def test_server_cli_reports_bad_config(tmp_path, capsys):
    from facelink.cloud import cli

    p = tmp_path / "bad.yaml"
    p.write_text("prot: 1\n")
    assert cli.main(["serve", "--config", str(p)]) == 2
    assert "unknown key(s) prot" in capsys.readouterr().err
