"""The model table beside the models is generated from the manifests and committed up to date."""
from __future__ import annotations

import json
import shutil

from facelink.cloud.evaluation import model_card
from facelink.shared import paths


def test_committed_models_readme_is_up_to_date():
    committed = (paths.MODELS_DIR / model_card.README_NAME).read_text()
    assert committed == model_card.render(), (
        "shared/resources/models/README.md is stale: run `facelink models readme` "
        "(python -m facelink.cloud.evaluation.model_card) and commit it")
    assert model_card.main(["--check"]) == 0


def test_every_committed_model_and_file_is_in_the_table():
    text = (paths.MODELS_DIR / model_card.README_NAME).read_text()
    for m in model_card.load_manifests(paths.MODELS_DIR):
        assert f"| `{m['name']}`" in text
        for digest in m["files"].values():
            assert digest in text


NEW_FIELDS = ("family", "label", "purpose", "quality", "ladder", "ablation_of", "tuned_from", "name_note")


def _fake_registry(tmp_path, **extra):
    """One committed rate point copied into a scratch registry, its manifest extended by ``extra``."""
    src = paths.MODELS_DIR / "face-ipr-q0" / "manifest.json"
    folder = tmp_path / "models" / "face-new-q3"
    folder.mkdir(parents=True)
    manifest = json.loads(src.read_text())
    for key in NEW_FIELDS:  # an old manifest: none of the fields later exports add
        manifest.pop(key, None)
    manifest.update(name="face-new-q3", **extra)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for fname in manifest["files"]:
        shutil.copyfile(src.parent / fname, folder / fname)
    return tmp_path / "models"


def test_check_fails_when_stale_and_passes_after_writing(tmp_path, capsys):
    models = _fake_registry(tmp_path)
    results = tmp_path / "results"
    results.mkdir()
    args = ["--models", str(models), "--results", str(results)]
    assert model_card.main([*args, "--check"]) == 1  # no README yet
    assert model_card.main(args) == 0
    assert model_card.main([*args, "--check"]) == 0
    readme = models / model_card.README_NAME
    readme.write_text(readme.read_text() + "edited by hand\n")
    assert model_card.main([*args, "--check"]) == 1
    assert "stale" in capsys.readouterr().err


def test_new_manifest_fields_are_used_and_old_ones_degrade(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    old = model_card.render(_fake_registry(tmp_path / "a"), results)
    row = next(line for line in old.splitlines() if line.startswith("| `face-new-q3`"))
    assert "| new |" in row  # family from the name
    assert "| — | — |" in row  # no result measured these files
    new = model_card.render(_fake_registry(tmp_path / "b", family="crop", label="facelink crop", quality=6,
                                           purpose="links under 300 B", ablation_of="face-other-q3",
                                           tuned_from="face-ipr-q0", ladder={"name": "crop", "point": "q3"},
                                           name_note="q3 is quality 6."), results)
    row = next(line for line in new.splitlines() if line.startswith("| `face-new-q3`"))
    assert "| crop (facelink crop) | 6 |" in row and "links under 300 B (ablation of `face-other-q3`)" in row
    assert "`face-ipr-q0`" in row and "`facelink train --ladder crop --point q3 --out runs/crop-q3`" in row
    assert "- `face-new-q3`: q3 is quality 6." in new


def test_results_count_only_for_the_files_they_measured(tmp_path):
    models = _fake_registry(tmp_path)
    manifest = json.loads((models / "face-new-q3" / "manifest.json").read_text())
    results = tmp_path / "results" / "run"
    results.mkdir(parents=True)

    def bench(h, created, nbytes):
        return {"schema": model_card.BENCH_SCHEMA, "dataset": "lfw", "recognizer": "mobilefacenet",
                "protocol": "face-crop", "setting": "asymmetric", "limited": False,
                "provenance": {"created": created, "config": {"crop_template": "arcface-112"}},
                "codecs": [{"settings": {"models": {"face-new-q3": h}},
                            "results": {"quality": ["face-new-q3"], "bytes_per_face": [nbytes], "accuracy": [0.97]}}]}

    (results / "a.json").write_text(json.dumps(bench("0" * 16, "2026-12-02", 111.0)))
    (results / "b.json").write_text(json.dumps(bench(model_card.files_hash(manifest), "2026-12-01", 222.0)))
    text = model_card.render(models, tmp_path / "results")
    assert "222 B → 97.00 / — %" in text and "111 B" not in text


def test_a_variable_rate_model_gets_its_range_and_a_table_by_quality(tmp_path):
    """A variable-rate model's row gives its quality range, default and λ range, and the default quality's measured
    bytes and accuracy; a table beside it every measured quality, from the newest sweep of exactly its files (found
    in a nested results folder)."""
    from vr_support import tiny_vr_model

    models = tmp_path / "models"
    _, folder = tiny_vr_model(models, "face-tiny")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["default_quality"] = 2.0
    (folder / "manifest.json").write_text(json.dumps(manifest))
    run = tmp_path / "results" / "core" / "step-1" / "lfw-crop-full"
    run.mkdir(parents=True)
    for recognizer, acc in (("mobilefacenet", [0.9, 0.95, 0.97]), ("sface", [0.92, 0.96, 0.98])):
        doc = {"schema": model_card.BENCH_SCHEMA, "dataset": "lfw", "recognizer": recognizer,
               "protocol": "face-crop", "setting": "asymmetric", "limited": False,
               "provenance": {"created": "2026-12-06", "config": {"crop_template": "arcface-112"}},
               "codecs": [{"codec": "facelink-tiny", "settings": {"model": "face-tiny",
                                                                  "model_digest": model_card.files_hash(manifest)},
                           "results": {"quality": [0, 2, 7], "bytes_per_face": [200.0, 400.0, 900.0],
                                       "accuracy": acc}}]}
        (run / f"lfw_{recognizer}.json").write_text(json.dumps(doc))
    text = model_card.render(models, tmp_path / "results", default_model="face-tiny")
    row = next(line for line in text.splitlines() if line.startswith("| `face-tiny` (default)"))
    assert "| variable rate | 0–7 (default 2) | 0.0004–0.0512 |" in row
    assert "400 B → 95.00 / 96.00 % at quality 2 ([core/step-1/lfw-crop-full]" in row
    assert row.endswith("| — |")  # nothing measured on CelebA
    assert "## `face-tiny` by quality" in text
    assert "| 7 | 0.0512 | 900 B → 97.00 / 98.00 % | — |" in text
