import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelink.shared.paths import DEMO_FACES_DIR

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def demo_faces() -> Path:
    return DEMO_FACES_DIR


@pytest.fixture(scope="session")
def face_rgb(demo_faces) -> np.ndarray:
    im = cv2.imread(str(demo_faces / "probe" / "Colin_Powell_0002.jpg"))
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)
