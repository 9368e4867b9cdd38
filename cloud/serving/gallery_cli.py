"""``facelink gallery``: inspect and erase a gallery directly, whichever server(s) use it.

  facelink gallery --gallery facelink-gallery.db list [--recognizer NAME] [--json]
  facelink gallery --gallery postgresql://facelink@db/facelink delete NAME [NAME ...]
  facelink gallery --gallery ... remove NAME SAMPLE_ID [SAMPLE_ID ...]

``delete`` erases identities with every sample of theirs (all recognizers); ``remove`` erases single samples
(their ids are in ``list``), and an identity with its last sample. Running servers on the same gallery see the
change at their next request. Exit status: 0 done, 1 something named was not found (the rest is done), 2 the
gallery could not be opened or a name or id is malformed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from facelink.cloud.serving.gallery import Gallery, GalleryError, GalleryUnavailable, NotFoundError
from facelink.cloud.serving.gallery_postgres import redact


def _time(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="seconds")


def _list(g: Gallery, args) -> int:
    records = g.records(all_recognizers=not args.recognizer)
    if args.json:
        doc = [{"name": r.name, "created_at": _time(r.created_at),
                "samples": [{"id": s.id, "recognizer": s.recognizer, "enrolled_at": _time(s.enrolled_at),
                             "enrolled_by": s.enrolled_by, "source": s.source} for s in r.samples]} for r in records]
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    for r in records:
        print(f"{r.name}  ({len(r.samples)} sample{'s' * (len(r.samples) != 1)}, since {_time(r.created_at)})")
        for s in r.samples:
            print(f"  {s.id:>8}  {s.recognizer:<16} {_time(s.enrolled_at)}  by {s.enrolled_by or '-':<16} "
                  f"{s.source or '-'}")
    print(f"{len(records)} identit{'ies' if len(records) != 1 else 'y'}", file=sys.stderr)
    return 0


def _delete(g: Gallery, args) -> int:
    status = 0
    for name in args.names:
        try:
            d = g.delete_identity(name)
            print(f"erased {d.identity} ({d.samples_removed} sample{'s' * (d.samples_removed != 1)})")
        except NotFoundError as e:
            print(f"facelink gallery delete: {e}", file=sys.stderr)
            status = 1
    return status


def _remove(g: Gallery, args) -> int:
    status = 0
    for sample_id in args.sample_ids:
        try:
            r = g.remove_sample(args.name, sample_id)
            gone = " (its last: the identity is erased too)" if r.identity_deleted else ""
            print(f"erased sample {sample_id} of {r.identity}{gone}")
        except NotFoundError as e:
            print(f"facelink gallery remove: {e}", file=sys.stderr)
            status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="facelink gallery", description="Inspect and erase a gallery (SQLite file or "
                                 "PostgreSQL), whichever servers use it.",
                                 epilog="Erasure is final: there is no undo.")
    ap.add_argument("--gallery", required=True,
                    help="the gallery: a SQLite file (as facelink serve --gallery) or a postgresql:// URL")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)
    ls = sub.add_parser("list", help="identities with their samples' ids and audit fields")
    ls.add_argument("--recognizer", help="only this recognizer's samples (default: every recognizer's)")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    de = sub.add_parser("delete", help="erase identities and every sample of theirs")
    de.add_argument("names", nargs="+", help="identity names")
    rm = sub.add_parser("remove", help="erase samples of one identity by id (from list)")
    rm.add_argument("name", help="the identity the samples belong to")
    rm.add_argument("sample_ids", nargs="+", type=int, metavar="SAMPLE_ID", help="sample ids")
    args = ap.parse_args(argv)
    where = redact(args.gallery)
    try:
        if "://" not in args.gallery and not Path(args.gallery).is_file():  # never create one here
            raise GalleryError("no such gallery file")
        with Gallery(args.gallery, getattr(args, "recognizer", None) or "") as g:
            return {"list": _list, "delete": _delete, "remove": _remove}[args.command](g, args)
    except (GalleryError, GalleryUnavailable) as e:
        print(f"facelink gallery: {e}" if where in str(e) else f"facelink gallery: {where}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
