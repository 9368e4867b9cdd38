"""facelink-edge run against a real server on loopback: crops delivered through the outbox, results as JSON lines,
and a clean stop on SIGINT / SIGTERM (the answers owed are awaited, the report printed, exit status 0)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from edge_support import facelink_server, standing_person, write_video

from facelink.edge import cli as edge_cli


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with facelink_server(tmp_path_factory.mktemp("server")) as target:
        yield target


@pytest.fixture(scope="module")
def video(tmp_path_factory, demo_faces):
    """Twenty seconds of one person standing at 15 fps (long enough to be interrupted)."""
    path = tmp_path_factory.mktemp("video") / "standing.avi"
    return write_video(path, standing_person([demo_faces / "probe" / "Colin_Powell_0002.jpg"], n=300))


def test_run_delivers_the_selected_crops(server, video, tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    rc = edge_cli.main(["run", str(video), "--server", server, "--outbox", str(tmp_path / "outbox.db"),
                        "--results", str(results), "--max-fps", "5", "--resend-interval", "8"])
    err = capsys.readouterr().err
    assert rc == 0, err
    report = json.loads(err.strip().splitlines()[-1])
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert report["frames"] == 100 and report["faces_tracked"] == 1 and report["stopped_by"] == "end of source"
    assert len(rows) == report["crops_sent"] == report["delivery"]["answered"]
    assert [r["reason"] for r in rows][:1] == ["first"] and "interval" in [r["reason"] for r in rows]
    assert all(r["face_found"] and r["bytes"] > 0 and r["track"] == 1 for r in rows)
    assert report["delivery"]["outbox"]["frames"] == 0 and report["delivery"]["outbox"]["dropped_frames"] == 0


def test_run_refuses_a_server_that_cannot_read_its_crops(server, video, tmp_path, capsys):
    rc = edge_cli.main(["run", str(video), "--server", server, "--outbox", str(tmp_path / "o.db"),
                        "--model", str(tmp_path / "missing-model")])
    assert rc == 2 and "no model" in capsys.readouterr().err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_cleanly(server, video, tmp_path, sig):
    """A real client process: stopped mid-video, it sends nothing more, collects the answers owed and reports."""
    results = tmp_path / "results.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "facelink.edge.cli", "run", str(video), "--server", server,
                             "--outbox", str(tmp_path / "outbox.db"), "--results", str(results)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    t0 = time.time()
    while not (results.exists() and results.read_text().strip()):  # the first crop answered
        assert proc.poll() is None and time.time() - t0 < 120, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    report = json.loads(err.strip().splitlines()[-1])
    assert report["event"] == "report" and report["stopped_by"] == signal.Signals(sig).name
    assert 0 < report["frames"] < 300
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(rows) == report["crops_sent"] == report["delivery"]["answered"]
    assert report["delivery"]["outbox"]["frames"] == 0
