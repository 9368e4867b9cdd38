"""The deployment example (cloud/deploy) holds together: its database init script prepares a gallery that servers
use as a plain role, and the server command line it runs names only options facelink serve has."""
import contextlib
import io
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from facelink.cloud.serving.gallery import Gallery

DEPLOY = Path(__file__).resolve().parents[1] / "cloud" / "deploy"


def test_init_script_prepares_the_gallery_for_a_plain_role(postgres_bin, postgres_url, tmp_path):
    import psycopg

    password = tmp_path / "gallery_db_password"
    password.write_text("s3cret\n")
    server, db = postgres_url.rsplit("/", 1)
    host, port = server.rsplit("@", 1)[1].split(":")
    env = dict(os.environ, PATH=f"{postgres_bin}:{os.environ['PATH']}", POSTGRES_USER="postgres", POSTGRES_DB=db,
               PGHOST=host, PGPORT=port, GALLERY_DB_PASSWORD_FILE=str(password))
    subprocess.run(["sh", str(DEPLOY / "init-gallery.sh")], env=env, check=True, capture_output=True, timeout=60)
    try:
        with psycopg.connect(postgres_url) as admin:
            assert admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'facelink'").fetchone() == (False,)
        g = Gallery(f"postgresql://facelink@{host}:{port}/{db}", "r")
        g.enroll("Ada", np.array([1.0, 0.0], np.float32), enrolled_by="ops")
        assert g.match(np.array([1.0, 0.0], np.float32))[0].identity == "Ada"
        g.close()
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("DROP OWNED BY facelink")
            admin.execute("DROP ROLE facelink")


def test_compose_runs_facelink_serve_with_options_it_has():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    server = compose["services"]["server"]
    flags = {arg.split("=", 1)[0] for arg in server["command"]}
    from facelink.cloud import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    known = set(re.findall(r"--[a-z][a-z-]*", out.getvalue()))
    assert flags <= known, flags - known
    assert set(server["secrets"]) <= set(compose["secrets"])
    assert "gallery_db_password" in server["entrypoint"][2] and "postgresql://" in " ".join(server["command"])
