"""``facelink bench compare``: two codec curves from two result folders, at equal bytes per face.

A benchmark report compares codecs that coded the same images. Runs with different face crops (``--crop-template``)
code different images, so their bpp (bits over the crop's pixels) cannot be compared; bytes per face can, and the
accuracy is measured on the same pairs. Each curve is taken as bytes per face → accuracy, and the test curve is put
against the anchor as the report puts a ladder against its ablation: each of its points against the anchor
interpolated at the same bytes, the BD accuracy in points, and the BD rate in bytes.

  facelink bench compare benchmarks/results/template-lfw-crop-112:facelink-ipr112 \\
      benchmarks/results/template-lfw-crop-96:facelink-ipr96 --out compare.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from facelink.benchmarks import metrics
from facelink.benchmarks.bench import against_curve, floats
from facelink.benchmarks.results_io import read_results


class CompareError(ValueError):
    pass


def _curve(doc: dict, codec: str) -> dict:
    if codec == "uncompressed":
        u = doc["uncompressed"]
        return {"quality": ["rgb24"], "bytes_per_face": [u["bytes_per_face"]], "accuracy": [u["accuracy"]]}
    for c in doc["codecs"]:
        if c["codec"] == codec:
            return {k: c["results"][k] for k in ("quality", "bytes_per_face", "accuracy")}
    raise CompareError(f"{doc['name']}: no codec {codec!r}; it has "
                       f"{', '.join(['uncompressed'] + [c['codec'] for c in doc['codecs']])}")


def _spec(text: str) -> tuple[Path, str]:
    folder, sep, codec = text.rpartition(":")
    if not sep or not folder or not codec:
        raise argparse.ArgumentTypeError(f"{text!r}: expected RESULTS_DIR:CODEC")
    return Path(folder), codec


def _docs(folder: Path) -> dict[tuple, dict]:
    docs = read_results(folder)
    if not docs:
        raise CompareError(f"{folder}: no benchmark results (facelink-bench JSON files) there")
    return {(d["dataset"], d["recognizer"], d["protocol"], d["setting"]): d for d in docs}


def compare(anchor: tuple[Path, str], test: tuple[Path, str]) -> dict:
    """For every (dataset, recognizer, protocol, setting) both folders hold: the test curve against the anchor's."""
    a_docs, t_docs = _docs(anchor[0]), _docs(test[0])
    shared = sorted(set(a_docs) & set(t_docs))
    if not shared:
        raise CompareError(f"{anchor[0]} and {test[0]} share no dataset / recognizer / protocol / setting")
    out = {"anchor": {"results": str(anchor[0]), "codec": anchor[1]},
           "test": {"results": str(test[0]), "codec": test[1]}, "unit": "bytes per face", "comparisons": []}
    for key in shared:
        a, t = a_docs[key], t_docs[key]
        if a["pairs"] != t["pairs"]:
            raise CompareError(f"{'/'.join(key)}: {a['pairs']} pairs against {t['pairs']}: not the same protocol")
        ca, ct = _curve(a, anchor[1]), _curve(t, test[1])
        same_bytes = against_curve(ca, ct, "anchor_accuracy", rate="bytes_per_face")
        bd_rate = metrics.bd_rate(floats(ca["bytes_per_face"]), floats(ca["accuracy"]),
                                  floats(ct["bytes_per_face"]), floats(ct["accuracy"]))
        out["comparisons"].append({
            "dataset": key[0], "recognizer": key[1], "protocol": key[2], "setting": key[3], "pairs": a["pairs"],
            "anchor_uncompressed_accuracy": a["uncompressed"]["accuracy"],
            "test_uncompressed_accuracy": t["uncompressed"]["accuracy"],
            **same_bytes, "bd_rate_bytes_percent": None if math.isnan(bd_rate) else bd_rate})
    return out


def _fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def table(result: dict) -> str:
    a, t = result["anchor"], result["test"]
    lines = [f"{t['codec']} ({t['results']}) against {a['codec']} ({a['results']}), at equal bytes per face", ""]
    for c in result["comparisons"]:
        lines.append(f"{c['dataset']} / {c['recognizer']} / {c['protocol']} / {c['setting']}: BD accuracy "
                     f"{_fmt(c['bd_accuracy_points'], '+.2f')} points, "
                     f"BD rate {_fmt(c['bd_rate_bytes_percent'], '+.1f')} %"
                     f" (uncompressed {100 * c['test_uncompressed_accuracy']:.2f} against "
                     f"{100 * c['anchor_uncompressed_accuracy']:.2f} %)")
        for p in c["points"]:
            lines.append(f"  {str(p['quality']):>14}  {p['bytes_per_face']:7.1f} B  {100 * p['accuracy']:6.2f} %  "
                         f"anchor {_fmt(p['anchor_accuracy'] and 100 * p['anchor_accuracy'], '6.2f')} %  "
                         f"{_fmt(p['difference_points'], '+.2f')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="facelink bench compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("anchor", type=_spec, help="RESULTS_DIR:CODEC")
    ap.add_argument("test", type=_spec, help="RESULTS_DIR:CODEC, compared against the anchor")
    ap.add_argument("--out", type=Path, help="also write the comparison as JSON (refuses to overwrite without --force)")
    ap.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    args = ap.parse_args(argv)
    try:
        result = compare(args.anchor, args.test)
    except CompareError as e:
        print(f"facelink bench compare: {e}", file=sys.stderr)
        return 2
    result["command"] = "facelink bench compare " + " ".join(sys.argv[1:] if argv is None else argv)
    print(table(result))
    if args.out:
        if args.out.exists() and not args.force:
            print(f"facelink bench compare: {args.out} exists (pass --force to replace it)", file=sys.stderr)
            return 2
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
