"""Command-line tools through their main(argv), with clear errors for bad input."""
import json

import numpy as np
import pytest

from facelink.cloud import cli as cloud_cli
from facelink.edge import cli as edge_cli
from facelink.shared import bitstream
from facelink.shared.alignment import TEMPLATES, template_id


def test_encode_decode_files(tmp_path, demo_faces, capsys):
    out = tmp_path / "a.flk"
    assert edge_cli.main(["encode", str(demo_faces / "probe" / "Tony_Blair_0002.jpg"), "-o", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["bytes"] == out.stat().st_size and info["width"] == 112 and info["mode"] == "face-crop"
    # an existing file is never overwritten without --force
    before = out.read_bytes()
    assert edge_cli.main(["encode", str(demo_faces / "probe" / "Tony_Blair_0003.jpg"), "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before
    png = tmp_path / "a.png"
    assert cloud_cli.main(["decode", str(out), "-o", str(png)]) == 0
    assert png.stat().st_size > 0
    # nor is a decoded image
    png.write_bytes(b"keep")
    assert cloud_cli.main(["decode", str(out), "-o", str(png)]) == 2
    assert "exists" in capsys.readouterr().err and png.read_bytes() == b"keep"
    assert cloud_cli.main(["decode", str(out), "-o", str(png), "--force"]) == 0 and png.read_bytes() != b"keep"


def test_edge_writes_either_format_version_and_the_cloud_reads_both(tmp_path, demo_faces, capsys):
    src = str(demo_faces / "probe" / "Tony_Blair_0002.jpg")
    sizes = {}
    for version in ("1", "2"):
        out = tmp_path / f"v{version}.flk"
        args = ["encode", src, "-o", str(out), "--model", "face-ipr-q1", "--format-version", version]
        assert edge_cli.main(args) == 0  # a rate point: versions 1 and 2 (a variable-rate model writes 3)
        sizes[version] = json.loads(capsys.readouterr().out)["bytes"]
        assert out.read_bytes()[3] == int(version)
        assert cloud_cli.main(["decode", str(out), "-o", str(tmp_path / f"v{version}.png")]) == 0
        capsys.readouterr()
    assert sizes["2"] < sizes["1"] - 19  # header, lengths and the second stream's state at least
    unknown = str(max(bitstream.READABLE_VERSIONS) + 1)
    with pytest.raises(SystemExit):
        edge_cli.main(["encode", src, "-o", str(tmp_path / "x.flk"), "--format-version", unknown])


def test_bad_inputs(tmp_path, capsys):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"nope")
    assert edge_cli.main(["encode", str(junk)]) == 2
    assert "not a readable image" in capsys.readouterr().err
    assert edge_cli.main(["encode", str(tmp_path / "missing.jpg")]) == 2
    assert edge_cli.main(["encode", str(junk), "--model", "no-such-model"]) == 2
    flat = tmp_path / "flat.png"
    import cv2

    cv2.imwrite(str(flat), np.full((100, 100, 3), 200, np.uint8))
    assert edge_cli.main(["encode", str(flat)]) == 2
    assert "no face found" in capsys.readouterr().err
    bad = tmp_path / "bad.flk"
    bad.write_bytes(b"FLK\x01garbage")
    assert cloud_cli.main(["decode", str(bad)]) == 2
    assert cloud_cli.main(["no-such-command"]) == 2


def test_stream_to_absent_server_fails_clearly(demo_faces, capsys):
    rc = edge_cli.main(["stream", str(demo_faces / "probe"), "--server", "127.0.0.1:9", "--timeout", "2"])
    assert rc == 2 and "no facelink server" in capsys.readouterr().err


def test_models_lists_default(capsys):
    assert edge_cli.main(["models"]) == 0
    assert "(default)" in capsys.readouterr().out


def test_edge_refuses_a_format_the_server_cannot_read():
    """A server that reads only version 1 (an older facelink) gets version-1 containers, or a clear error."""
    from facelink.v1 import facelink_pb2 as pb

    class OldServer:
        def model_info(self):
            return pb.ModelInfoResponse(bitstream_format_version=1,
                                        models=[pb.CodecModel(name="m", model_id="0123456789abcdef")])

    with pytest.raises(edge_cli.EdgeError, match="--format-version 1"):
        edge_cli.check_server_model(OldServer(), "0123456789abcdef", 2)
    edge_cli.check_server_model(OldServer(), "0123456789abcdef", 1)
    # nor does it know any crop template but arcface-112 (it sends no crop_template_ids)
    edge_cli.check_server_model(OldServer(), "0123456789abcdef", 1, crop_template_id=1)
    with pytest.raises(edge_cli.EdgeError, match="--crop-template arcface-112"):
        edge_cli.check_server_model(OldServer(), "0123456789abcdef", 1, crop_template_id=2)


def test_edge_codes_a_smaller_crop_template_that_the_cloud_reads(tmp_path, demo_faces, capsys):
    from PIL import Image

    src = str(demo_faces / "probe" / "Tony_Blair_0002.jpg")
    sizes = {}
    for name, side in (("arcface-112", 112), ("arcface-96", 96), ("arcface-80", 80)):
        out = tmp_path / f"{name}.flk"
        assert edge_cli.main(["encode", src, "-o", str(out), "--crop-template", name]) == 0
        printed = json.loads(capsys.readouterr().out)
        sizes[name] = printed["bytes"]
        assert printed["crop_template"] == name and printed["width"] == side
        frame = bitstream.unpack(out.read_bytes())
        assert frame.template_id == template_id(TEMPLATES[name]) and (frame.height, frame.width) == (side, side)
        png = tmp_path / f"{name}.png"
        assert cloud_cli.main(["decode", str(out), "-o", str(png)]) == 0
        capsys.readouterr()
        with Image.open(png) as im:
            assert im.size == (side, side)
    assert sizes["arcface-80"] < sizes["arcface-96"] < sizes["arcface-112"]
    assert edge_cli.main(["encode", src, "--full-frame", "--crop-template", "arcface-96"]) == 2
    assert "--crop-template applies to face crops" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        edge_cli.main(["encode", src, "--crop-template", "dlib-150"])  # a template the container cannot name
    from facelink.edge.encoder import EdgePipeline

    with pytest.raises(ValueError, match="unknown crop template 'dlib-150'"):
        EdgePipeline(crop_template="dlib-150")


def test_every_serve_option_sets_the_config_field_of_its_name(tmp_path):
    """facelink serve's options map onto ServerConfig by name (no hand-kept list to drift): every option is a field
    or one of the command's own; each given option reaches the configuration, and an option not given leaves the
    config file's value (a flag's absence is not False)."""
    import dataclasses

    from facelink.cloud.serving import serve_command
    from facelink.cloud.serving.settings import ServerConfig

    fields = {f.name for f in dataclasses.fields(ServerConfig)}
    parser = serve_command.build_parser()
    dests = {a.dest for a in parser._actions if a.dest != "help"}
    assert dests - fields == set(serve_command.COMMAND_OPTIONS)
    argv = ["--host", "::1", "--port", "7", "--gallery", "g.db", "--recognizer", "r", "--model", "a", "--model", "b",
            "--threshold", "0.5", "--max-frame-bytes", "1000", "--max-pixels", "4096", "--max-image-pixels", "9",
            "--max-message-bytes", "99999", "--max-streams", "3", "--stream-window", "2", "--workers", "5",
            "--torch-threads", "0", "--device", "cpu", "--batching", "off", "--batch-max", "4",
            "--batch-wait-ms", "1.5", "--no-adapters", "--no-warmup", "--auth-tokens", "t", "--tls-cert", "c",
            "--tls-key", "k", "--client-ca", "ca", "--insecure", "--metrics-port", "0", "--metrics-host", "::1",
            "--shutdown-grace-s", "2.5"]
    cfg = serve_command.config_from_args(parser.parse_args(argv))
    given = {a.dest for a in parser._actions if a.option_strings and any(o in argv for o in a.option_strings)}
    assert given >= dests - {"config", "ready_file", "verbose", "help"}, "an option left out of this test"
    assert dataclasses.asdict(cfg) == {**dataclasses.asdict(ServerConfig()), **dict(
        host="::1", port=7, gallery="g.db", recognizer="r", models=["a", "b"], threshold=0.5, max_frame_bytes=1000,
        max_pixels=4096, max_image_pixels=9, max_message_bytes=99999, max_streams=3, stream_window=2, workers=5,
        torch_threads=0, device="cpu", batching=False, batch_max=4, batch_wait_ms=1.5, adapters=False, warmup=False,
        auth_tokens="t", tls_cert="c", tls_key="k", client_ca="ca", insecure=True, metrics_port=0,
        metrics_host="::1", shutdown_grace_s=2.5)}
    assert serve_command.config_from_args(parser.parse_args([])) == ServerConfig()
    conf = tmp_path / "server.yaml"
    conf.write_text("insecure: true\nbatching: false\nport: 9\n")
    cfg = serve_command.config_from_args(parser.parse_args(["--config", str(conf), "--port", "8"]))
    assert (cfg.insecure, cfg.batching, cfg.port) == (True, False, 8)
