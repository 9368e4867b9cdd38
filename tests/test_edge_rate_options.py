"""facelink-edge --quality and --max-bytes: a variable-rate model's continuous quality, or the highest quality whose
container fits a byte budget per face; a rate point (the default model) refuses both with a clear error; a server is
refused only when the highest container version it reads is below the one this edge writes."""
import json

import pytest
from edge_support import standing_person, write_video
from vr_support import tiny_vr_model

from facelink.edge import cli as edge_cli
from facelink.shared import bitstream
from facelink.v1 import facelink_pb2 as pb


@pytest.fixture(scope="module")
def vr_model(tmp_path_factory):
    """A small variable-rate model after a few training steps on random patches, exported as a registry folder."""
    return str(tiny_vr_model(tmp_path_factory.mktemp("registry"))[1])


@pytest.fixture(scope="module")
def probe(demo_faces):
    return str(demo_faces / "probe" / "Colin_Powell_0002.jpg")


def _encode(tmp_path, capsys, *args):
    out = tmp_path / f"x{len(list(tmp_path.iterdir()))}.flk"
    rc = edge_cli.main(["encode", *args, "-o", str(out)])
    cap = capsys.readouterr()
    return rc, (json.loads(cap.out) if rc == 0 else cap.err), out


def test_a_rate_point_refuses_quality_and_byte_budget(probe, tmp_path, capsys):
    for option in (["--quality", "2"], ["--max-bytes", "400"]):
        rc, err, _ = _encode(tmp_path, capsys, probe, "--model", "face-ipr-q1", *option)
        assert rc == 2 and f"{option[0]} needs a variable-rate model" in err and "face-ipr-q1" in err
        assert "Traceback" not in err
    with pytest.raises(SystemExit):  # argparse: not both
        edge_cli.main(["encode", probe, "--quality", "2", "--max-bytes", "400"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_quality_orders_the_sizes_and_travels_in_the_container(vr_model, probe, tmp_path, capsys):
    sizes = {}
    for q in ("0", "3.5", "7"):
        rc, row, out = _encode(tmp_path, capsys, probe, "--model", vr_model, "--quality", q)
        assert rc == 0 and row["format_version"] == bitstream.VARIABLE_RATE_VERSION
        assert row["codec_quality"] == float(q) == bitstream.unpack(out.read_bytes()).quality
        sizes[q] = row["bytes"]
    # a tiny model may code two low qualities in equal bytes: the sizes must not fall, and the top exceed the bottom
    assert sizes["0"] <= sizes["3.5"] <= sizes["7"] and sizes["0"] < sizes["7"]
    rc, err, _ = _encode(tmp_path, capsys, probe, "--model", vr_model, "--quality", "9")
    assert rc == 2 and "quality must lie in [0, 7]" in err
    rc, err, _ = _encode(tmp_path, capsys, probe, "--model", vr_model, "--format-version", "2")
    assert rc == 2 and "variable-rate" in err and "version 3" in err


def test_max_bytes_finds_a_quality_within_the_budget(vr_model, probe, tmp_path, capsys):
    low = _encode(tmp_path, capsys, probe, "--model", vr_model, "--quality", "0")[1]["bytes"]
    high = _encode(tmp_path, capsys, probe, "--model", vr_model, "--quality", "7")[1]["bytes"]
    budget = (low + high) // 2
    rc, row, out = _encode(tmp_path, capsys, probe, "--model", vr_model, "--max-bytes", str(budget))
    assert rc == 0 and row["bytes"] == out.stat().st_size <= budget and 0 <= row["codec_quality"] < 7
    rc, err, _ = _encode(tmp_path, capsys, probe, "--model", vr_model, "--max-bytes", str(low - 1))
    assert rc == 2 and "lowest quality needs" in err
    rc, err, _ = _encode(tmp_path, capsys, probe, "--model", vr_model, "--max-bytes", "0")
    assert rc == 2 and "positive" in err


def test_run_codes_every_crop_within_the_budget(vr_model, probe, demo_faces, tmp_path, capsys):
    video = write_video(tmp_path / "standing.avi", standing_person([demo_faces / "probe" / "Colin_Powell_0002.jpg"],
                                                                    n=15))
    low = _encode(tmp_path, capsys, probe, "--model", vr_model, "--quality", "0")[1]["bytes"]
    high = _encode(tmp_path, capsys, probe, "--model", vr_model, "--quality", "7")[1]["bytes"]
    budget = (low + high) // 2
    rc = edge_cli.main(["run", str(video), "--offline", "--every-face", "--model", vr_model,
                        "--max-bytes", str(budget)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    rows = [json.loads(line) for line in cap.out.splitlines()]
    report = json.loads(cap.err.strip().splitlines()[-1])
    assert len(rows) == report["crops_sent"] == 15 and report["crops_over_budget"] == 0
    assert all(r["bytes"] <= budget and 0 <= r["codec_quality"] <= 7 for r in rows)
    # a budget nothing fits: the crops are counted, not sent, and the run still ends cleanly
    rc = edge_cli.main(["run", str(video), "--offline", "--every-face", "--model", vr_model, "--max-bytes", "20"])
    cap = capsys.readouterr()
    report = json.loads(cap.err.strip().splitlines()[-1])
    assert rc == 0 and report["crops_sent"] == 0 and report["crops_over_budget"] == 15
    rc = edge_cli.main(["run", str(video), "--offline", "--model", "face-ipr-q1", "--quality", "3"])
    assert rc == 2 and "--quality needs a variable-rate model" in capsys.readouterr().err


class _Server:
    """What ModelInfo of a server answers, as the edge's check reads it."""

    def __init__(self, version: int, model_id: str):
        self.info = pb.ModelInfoResponse(bitstream_format_version=version,
                                         models=[pb.CodecModel(name="tiny-vr", model_id=model_id)])

    def model_info(self):
        return self.info


def test_the_server_must_read_at_least_the_version_written():
    mid = "0123456789abcdef"
    edge_cli.check_server_model(_Server(3, mid), mid, bitstream.VARIABLE_RATE_VERSION)
    edge_cli.check_server_model(_Server(3, mid), mid, bitstream.FORMAT_VERSION)  # reads 3: reads 2 as well
    with pytest.raises(edge_cli.EdgeError, match="reads bitstream format versions up to 2.*variable-rate"):
        edge_cli.check_server_model(_Server(2, mid), mid, bitstream.VARIABLE_RATE_VERSION)
