import json
import time

import numpy as np
import pytest

from facelink.cloud.serving.gallery import Deletion, Gallery, GalleryError, IdentityRecord, NotFoundError, Removal


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


# -- names, audit fields, erasure, several servers on one file (the SQLite backend) ----------------------------------
@pytest.mark.parametrize("given,stored", [("  Ada   Lovelace ", "Ada Lovelace"), ("Ａｄａ", "Ada"),
                                          ("Ada\u00a0Lovelace", "Ada Lovelace"), ("Юрий Гагарин", "Юрий Гагарин"),
                                          ("José Saramago", "José Saramago")])
def test_names_are_stored_in_canonical_form(tmp_path, given, stored):
    g = Gallery(tmp_path / "g.db", "r")
    g.enroll(given, unit([1, 0]))
    g.enroll(stored, unit([1, 0]))
    assert g.identities() == [(stored, 2)]


@pytest.mark.parametrize("name,why", [("Colin\u200bPowell", "U\\+200B"), ("Colin \u202ePowell", "U\\+202E"),
                                      ("C\u043elin Powell", "mixes Cyrillic and Latin"), ("bad\tname", "U\\+0009"),
                                      ("\ue000", "U\\+E000")])
def test_look_alike_names_are_refused(tmp_path, name, why):
    g = Gallery(tmp_path / "g.db", "r")
    with pytest.raises(GalleryError, match=why):
        g.enroll(name, unit([1, 0]))


def test_labels_are_bounded(tmp_path):
    g = Gallery(tmp_path / "g.db", "r")
    with pytest.raises(GalleryError, match="source of 10000 characters"):
        g.enroll("Ada", unit([1, 0]), source="x" * 10_000)
    with pytest.raises(GalleryError, match="enrolled_by"):
        g.enroll("Ada", unit([1, 0]), enrolled_by="admin\n")
    assert g.identities() == []


def test_audit_fields_and_sample_removal(tmp_path):
    g = Gallery(tmp_path / "g.db", "r")
    t0 = time.time()
    g.enroll("Ada", unit([1, 0]), source="ada1.jpg", enrolled_by="ops-admin")
    g.enroll("Ada", unit([0.8, 0.6]), source="ada2.jpg", enrolled_by="camera-7")
    (ada,) = g.records()
    assert [(s.source, s.enrolled_by, s.recognizer) for s in ada.samples] == [("ada1.jpg", "ops-admin", "r"),
                                                                              ("ada2.jpg", "camera-7", "r")]
    assert all(t0 - 1 <= s.enrolled_at <= time.time() + 1 for s in ada.samples)
    first, second = (s.id for s in ada.samples)
    with pytest.raises(NotFoundError, match="no sample"):
        g.remove_sample("Ada", second + 100)
    assert g.remove_sample("Ada", first) == Removal("Ada", 1, False)
    # the template is now the remaining sample alone
    assert g.match(unit([0.8, 0.6]))[0].similarity == pytest.approx(1.0, abs=1e-6)
    assert g.remove_sample("Ada", second) == Removal("Ada", 0, True)
    assert g.records() == [] and g.match(unit([1, 0])) == []
    with pytest.raises(NotFoundError):
        g.remove_sample("Ada", second)


def test_delete_identity_erases_every_recognizer(tmp_path):
    path = tmp_path / "g.db"
    a, b = Gallery(path, "rec-a"), Gallery(path, "rec-b")
    a.enroll("Ada", unit([1, 0]))
    b.enroll("Ada", unit([0, 1, 0]))
    a.enroll("Bob", unit([0, 1]))
    assert a.delete_identity(" Ada ") == Deletion("Ada", 2)
    assert a.identities() == [("Bob", 1)] and b.records() == [IdentityRecord("Bob", a.records()[0].created_at, ())]
    with pytest.raises(NotFoundError):
        a.delete_identity("Ada")


def test_erased_embeddings_leave_the_file(tmp_path):
    """secure_delete and the log checkpoint: an erased embedding's bytes are in neither the file nor its log."""
    path = tmp_path / "g.db"
    g = Gallery(path, "r")
    secret = unit(np.arange(1, 65, dtype=np.float32))
    g.enroll("Ada", secret)
    g.enroll("Bob", unit(np.ones(64)))
    g.delete_identity("Ada")
    g.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("g.db"))
    assert secret.tobytes() not in stored and b"Ada" not in stored


def test_two_servers_on_one_file_see_each_others_writes(tmp_path):
    path = tmp_path / "g.db"
    a, b = Gallery(path, "r"), Gallery(path, "r")
    a.enroll("Ada", unit([1, 0]))
    assert [m.identity for m in b.match(unit([1, 0]))] == ["Ada"]  # b caches its templates here
    a.enroll("Bob", unit([0, 1]))
    assert b.match(unit([0, 1]))[0].identity == "Bob"
    a.enroll("Bob", unit([0.6, 0.8]))
    assert b.match(unit([0, 1]))[0].similarity == pytest.approx(a.match(unit([0, 1]))[0].similarity)
    a.delete_identity("Bob")
    assert [m.identity for m in b.match(unit([0, 1]))] == ["Ada"]
    b.enroll("Cy", unit([-1, 0]))
    assert a.match(unit([-1, 0]))[0].identity == "Cy" and a.size() == b.size() == 2


V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE identities (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at REAL NOT NULL);
CREATE TABLE embeddings (id INTEGER PRIMARY KEY, identity_id INTEGER NOT NULL REFERENCES identities(id)
    ON DELETE CASCADE, recognizer TEXT NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL,
    source TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL);
CREATE INDEX embeddings_by_recognizer ON embeddings(recognizer, identity_id);
INSERT INTO meta VALUES ('schema_version', '1');
"""


def test_version_1_gallery_is_migrated_without_loss(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    db.execute("INSERT INTO identities VALUES (1, 'Ada', 100.0), (2, 'Legacy\u200bName', 101.0)")
    for sid, ident, v in ((1, 1, [1, 0]), (2, 2, [0, 1]), (5, 1, [0.8, 0.6])):
        db.execute("INSERT INTO embeddings VALUES (?, ?, 'r', 2, ?, 'old.jpg', 102.0)",
                   (sid, ident, unit(v).tobytes()))
    db.commit()
    db.close()
    g = Gallery(path, "r")
    assert [(r.name, [(s.id, s.source, s.enrolled_by) for s in r.samples]) for r in g.records()] == [
        ("Ada", [(1, "old.jpg", ""), (5, "old.jpg", "")]), ("Legacy\u200bName", [(2, "old.jpg", "")])]
    assert g.enroll("Ada", unit([1, 0]), enrolled_by="ops") == 3
    assert g.records()[0].samples[-1].id == 6  # ids keep growing
    # a name stored before the name rules is still erasable
    assert g.delete_identity("Legacy\u200bName").samples_removed == 1
    g.remove_sample("Ada", 6)
    assert Gallery(path, "r").enroll("Ada", unit([1, 0])) == 3
    assert Gallery(path, "r").records()[0].samples[-1].id == 7  # never reused after a removal


def test_gallery_command_lists_and_erases(tmp_path, capsys):
    from facelink.cloud.serving.gallery_cli import main

    path = tmp_path / "g.db"
    g = Gallery(path, "rec-a")
    g.enroll("Ada", unit([1, 0]), source="ada.jpg", enrolled_by="ops")
    g.enroll("Ada", unit([0.6, 0.8]))
    Gallery(path, "rec-b").enroll("Bob", unit([0, 1, 0]), source="bob.png")
    assert main(["--gallery", str(path), "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["name"], [(s["recognizer"], s["source"], s["enrolled_by"]) for s in r["samples"]]) for r in listed] == [
        ("Ada", [("rec-a", "ada.jpg", "ops"), ("rec-a", "", "")]), ("Bob", [("rec-b", "bob.png", "")])]
    assert main(["--gallery", str(path), "list", "--recognizer", "rec-b"]) == 0
    out = capsys.readouterr().out
    assert "Ada  (0 samples" in out and "bob.png" in out and "ada.jpg" not in out
    ada_ids = [s["id"] for s in listed[0]["samples"]]
    assert main(["--gallery", str(path), "remove", "Ada", str(ada_ids[0]), "999"]) == 1
    assert f"erased sample {ada_ids[0]} of Ada" in capsys.readouterr().out
    assert g.identities() == [("Ada", 1), ("Bob", 0)]
    assert main(["--gallery", str(path), "delete", "Bob", "Cy"]) == 1
    captured = capsys.readouterr()
    assert "erased Bob (1 sample)" in captured.out and "no identity named 'Cy'" in captured.err
    assert g.identities() == [("Ada", 1)]
    assert main(["--gallery", str(tmp_path / "absent.db"), "list"]) == 2
    assert not (tmp_path / "absent.db").exists() and "no such gallery file" in capsys.readouterr().err
