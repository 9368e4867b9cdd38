"""The built one-file binary (dist/facelink-edge, `make edge-binary`), not Python, against a real server on loopback."""
import json
import os
import subprocess
from pathlib import Path

import pytest
from edge_support import facelink_server, standing_person, write_video

from facelink.shared.paths import REPO_ROOT
from facelink.shared.registry import DEFAULT_MODEL

BINARY = (REPO_ROOT or Path.cwd()) / "dist" / "facelink-edge"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not BINARY.is_file(), reason="dist/facelink-edge is not built "
                                                                                  "(make edge-binary builds it)")]


def _binary(*args, timeout=300):
    # No Python of this checkout on the way: a clean environment but for PATH and HOME.
    env = {k: os.environ[k] for k in ("PATH", "HOME", "TMPDIR") if k in os.environ}
    return subprocess.run([str(BINARY), *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_binary_holds_only_the_default_rate_point():
    r = _binary("models")
    assert r.returncode == 0, r.stderr
    assert [line.split("\t")[0] for line in r.stdout.splitlines()] == [DEFAULT_MODEL]
    r = _binary("--help")
    assert r.returncode == 0 and "run" in r.stdout and r.stderr == ""


def test_binary_runs_a_video_against_a_server(tmp_path, demo_faces):
    video = write_video(tmp_path / "standing.avi",
                        standing_person([demo_faces / "probe" / "Colin_Powell_0002.jpg"], n=45))
    results = tmp_path / "results.jsonl"
    with facelink_server(tmp_path) as target:
        r = _binary("run", str(video), "--server", target, "--outbox", str(tmp_path / "outbox.db"),
                    "--results", str(results))
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stderr.strip().splitlines()[-1])
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert report["frames"] == 45 and report["faces_tracked"] == 1
    assert len(rows) == report["crops_sent"] == report["delivery"]["answered"] >= 1
    assert all(row["face_found"] and row["track"] == 1 for row in rows)
