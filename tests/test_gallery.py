import numpy as np
import pytest

from facelink.cloud.serving.gallery import Gallery, GalleryError


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def test_enroll_match_and_persist(tmp_path):
    path = tmp_path / "g.db"
    g = Gallery(path, "rec-a")
    assert g.match(unit([1, 0, 0])) == []
    assert g.enroll("Ada", unit([1, 0, 0])) == 1
    assert g.enroll("Ada", unit([1, 0.1, 0])) == 2
    g.enroll("Bob", unit([0, 1, 0]))
    m = g.match(unit([0.9, 0.1, 0]), top_k=2)
    assert [x.identity for x in m] == ["Ada", "Bob"] and m[0].similarity > m[1].similarity
    g.close()
    g = Gallery(path, "rec-a")
    assert g.identities() == [("Ada", 2), ("Bob", 1)]
    # another recognizer's space is kept apart
    assert Gallery(path, "rec-b").match(unit([1, 0, 0])) == []


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, "bad\nname", None])
def test_bad_names_are_refused(tmp_path, name):
    g = Gallery(tmp_path / "g.db", "r")
    with pytest.raises(GalleryError):
        g.enroll(name, unit([1, 0]))
    assert g.identities() == []


def test_bad_embeddings_are_refused_and_nothing_is_lost(tmp_path):
    g = Gallery(tmp_path / "g.db", "r")
    g.enroll("Ada", unit([1, 0]))
    for v in ([2.0, 0.0], [np.nan, 1.0]):
        with pytest.raises(GalleryError):
            g.enroll("Ada", np.array(v, np.float32))
    assert g.identities() == [("Ada", 1)]


def test_schema_version_is_checked(tmp_path):
    import sqlite3

    path = tmp_path / "g.db"
    Gallery(path, "r").close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(GalleryError, match="schema"):
        Gallery(path, "r")
