"""Configuration files are checked against their schema: unknown keys and wrong types are errors."""
from pathlib import Path

import pytest

from facelink.shared import config
from facelink.cloud.serving.server import ServerConfig
from facelink.cloud.training.train import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "cloud" / "training" / "configs"


def test_shipped_configs_load():
    assert config.load(ServerConfig, CONFIGS.parents[1] / "serving" / "server.yaml").port == 50051
    assert config.load(TrainConfig, CONFIGS / "first-model.yaml").M == 128


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
