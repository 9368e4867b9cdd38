"""The built one-file binary (dist/facelink-edge, `make edge-binary`), not Python, against a real server on loopback;
it unpacks itself once per build into its cache folder (edge/packaging/selfextract.py)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from edge_support import facelink_server, standing_person, write_video

from facelink.shared.paths import REPO_ROOT
from facelink.shared.registry import DEFAULT_MODEL

BINARY = (REPO_ROOT or Path.cwd()) / "dist" / "facelink-edge"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not BINARY.is_file(), reason="dist/facelink-edge is not built "
                                                                                  "(make edge-binary builds it)")]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The binary's cache folder for this module's launches (not the user's ~/.cache)."""
    return tmp_path_factory.mktemp("edge-cache")


def _env(cache):
    # No Python of this checkout on the way: a clean environment but for PATH, HOME and the cache folder.
    env = {k: os.environ[k] for k in ("PATH", "HOME", "TMPDIR") if k in os.environ}
    return dict(env, FACELINK_EDGE_CACHE=str(cache))


def _disk(folder: Path) -> str:
    st = os.statvfs(folder if folder.exists() else folder.parent)
    return f"free space beside {folder}: {st.f_bavail * st.f_frsize / 2**20:.0f} MiB"


def _binary(*args, cache, timeout=300):
    return subprocess.run([str(BINARY), *args], capture_output=True, text=True, timeout=timeout, env=_env(cache))


def test_binary_unpacks_once_per_build_and_two_first_launches_agree(tmp_path):
    cache = tmp_path / "cache"
    launches = [subprocess.Popen([str(BINARY), "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=_env(cache)) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in launches]
    if [p.returncode for p in launches] != [0, 0]:  # the whole stderr: an assertion's repr would cut it short
        pytest.fail("\n".join(f"launch {i}: exit {p.returncode}\nstderr:\n{err}\n{_disk(cache)}"
                               for i, (p, (_, err)) in enumerate(zip(launches, outputs))), pytrace=False)
    assert outputs[0][0] == outputs[1][0] and outputs[0][0].startswith(DEFAULT_MODEL)
    published = [p for p in cache.iterdir() if p.is_symlink()]
    # one copy published, the other launch's copy removed: no second folder, no half-unpacked leftovers
    assert len(published) == 1 and sorted(p.name for p in cache.iterdir()) == sorted(
        [published[0].name, os.readlink(published[0])])
    before = sorted(cache.iterdir())
    assert _binary("models", cache=cache).returncode == 0 and sorted(cache.iterdir()) == before


def test_binary_refuses_a_cache_folder_others_can_write(tmp_path):
    cache = tmp_path / "shared-cache"
    cache.mkdir(mode=0o777)
    cache.chmod(0o777)
    r = _binary("models", cache=cache)
    assert r.returncode == 70 and "writable by no one else" in r.stderr
    assert list(cache.iterdir()) == []


def test_binary_holds_only_the_default_rate_point(cache):
    r = _binary("models", cache=cache)
    assert r.returncode == 0, r.stderr
    assert [line.split("\t")[0] for line in r.stdout.splitlines()] == [DEFAULT_MODEL]
    r = _binary("--help", cache=cache)
    assert r.returncode == 0 and "run" in r.stdout and r.stderr == ""


def test_binary_runs_a_video_against_a_server(tmp_path, demo_faces, cache):
    video = write_video(tmp_path / "standing.avi",
                        standing_person([demo_faces / "probe" / "Colin_Powell_0002.jpg"], n=45))
    results = tmp_path / "results.jsonl"
    with facelink_server(tmp_path) as target:
        r = _binary("run", str(video), "--server", target, "--outbox", str(tmp_path / "outbox.db"),
                    "--results", str(results), cache=cache)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stderr.strip().splitlines()[-1])
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert report["frames"] == 45 and report["faces_tracked"] == 1
    assert len(rows) == report["crops_sent"] == report["delivery"]["answered"] >= 1
    assert all(row["face_found"] and row["track"] == 1 for row in rows)


def test_binary_archive_holds_the_native_rans_core_and_nothing_of_torch():
    pytest.importorskip("PyInstaller", reason="the archive check reads PyInstaller archives (the [build] extra)")
    sys.path.insert(0, str((REPO_ROOT or Path.cwd()) / "edge" / "packaging"))
    from check_binary import check

    result = check(BINARY, DEFAULT_MODEL)
    assert result["ok"] and result["forbidden"] == [] and result["missing"] == [], result
    assert result["models"] == [DEFAULT_MODEL]
