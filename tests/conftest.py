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


ASSETS_ABSENT = ("../shared/assets is absent (the data sets and recognizer weights: put them beside the checkout or set "
                 "FACELINK_ASSETS)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that needs the assets skips with one clear reason on a clone without them. Where the assets folder is
    there, a missing file in it is a real failure and is reported as one."""
    outcome = yield
    rep = outcome.get_result()
    if (call.excinfo is not None and call.excinfo.errisinstance(MissingAssetError)
            and not assets_dir().is_dir()):
        rep.outcome = "skipped"
        rep.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {ASSETS_ABSENT}")
