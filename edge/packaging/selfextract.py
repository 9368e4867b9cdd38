"""Pack the PyInstaller folder build of the edge into one file that unpacks itself once, not at every launch.

  python edge/packaging/selfextract.py build/edge-binary/dist/facelink-edge dist/facelink-edge

The result is a POSIX shell header followed by the folder (the PyInstaller "onedir" build: its launcher,
``_internal/`` with Python, the libraries, the default rate point and YuNet) as gzip'd tars: first one holding only
the folders, then ``SHARDS`` holding the files, of about equal size. The first launch unpacks the folders, then
inflates the file shards at once, one process each (gzip inflates on one core: four shards cut the first launch's
unpacking to about a core's share on a four-core device). The folders come first because tars running side by side
that each create a missing parent folder race one another (one tar's mkdir or chmod of a folder while another writes
into it). At launch the header looks for that build's folder in a private cache, ``$FACELINK_EDGE_CACHE`` or else
``$XDG_CACHE_HOME/facelink-edge`` or ``~/.cache/facelink-edge`` (``$TMPDIR/facelink-edge-UID`` without a home), under
the payload's sha256; when absent it unpacks the payload into a fresh folder beside it and publishes it with one
atomic symbolic link (two launches at once each unpack, one link wins, the other's copy is removed), then ``exec``s
the launcher in it: arguments, exit status and signals are the program's own. The cache folder must belong to the user
and be writable by no one else.

Why: PyInstaller's one-file mode inflates and writes its whole archive (about 280 MB of libraries: OpenCV, two
OpenBLAS builds, onnxruntime, gRPC, Python) into a new temporary folder at every launch and deletes it at exit;
that was most of the one-file binary's start-up (``facelink bench edge-binary`` times both). Here only the first
launch of a build pays it. The header needs ``sh``, ``tail``, ``head -c``, ``tar`` with gzip, ``ls``, ``awk``, ``cut``,
``mktemp`` and ``ln -n``: what Raspberry Pi OS, or a BusyBox system, has.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import sys
import tarfile
from pathlib import Path

MARKER = b"__FACELINK_EDGE_PAYLOAD_FOLLOWS__\n"
HEADER = r"""#!/bin/sh
# facelink-edge: the edge client in one file. A shell header (this), then the program's folder as gzip'd tars
# (offset:length in bytes after the header, each). The first launch of this build unpacks the first (the folders),
# then the others all at once, into a private cache folder; every launch runs it from there. Packed by
# edge/packaging/selfextract.py; payload sha256 {digest}.
id={id}
skip={skip}
shards="{shards}"
if [ -n "$FACELINK_EDGE_CACHE" ]; then base=$FACELINK_EDGE_CACHE
elif [ -n "$XDG_CACHE_HOME" ]; then base=$XDG_CACHE_HOME/facelink-edge
elif [ -n "$HOME" ]; then base=$HOME/.cache/facelink-edge
else base=${{TMPDIR:-/tmp}}/facelink-edge-$(id -u)
fi
dir=$base/$id
if [ ! -x "$dir/facelink-edge" ]; then
  umask 077
  if ! mkdir -p "$base" 2>/dev/null || [ ! -w "$base" ]; then
    echo "facelink-edge: cannot unpack into $base (set FACELINK_EDGE_CACHE to a writable folder)" >&2; exit 70
  fi
  owner=$(ls -nd "$base" | awk '{{print $3}}'); perm=$(ls -nd "$base" | cut -c6,9)
  if [ "$owner" != "$(id -u)" ] || [ "$perm" != "--" ]; then
    echo "facelink-edge: $base must belong to you and be writable by no one else" >&2; exit 70
  fi
  tmp=$(mktemp -d "$base/.$id.XXXXXX") || exit 70
  unpack() {{ tail -c +$((skip + ${{1%:*}} + 1)) "$0" | head -c "${{1#*:}}" | tar -xzf - -C "$tmp"; }}
  fail() {{ rm -rf "$tmp"; echo "facelink-edge: cannot unpack $0 into $base" >&2; exit 70; }}
  unpack "${{shards%% *}}" || fail
  pids=
  for s in ${{shards#* }}; do
    unpack "$s" &
    pids="$pids $!"
  done
  ok=1
  for p in $pids; do wait "$p" || ok=0; done
  [ "$ok" = 1 ] || fail
  ln -sn "${{tmp##*/}}" "$dir" 2>/dev/null || rm -rf "$tmp"  # another launch published first: use its copy
fi
exec "$dir/facelink-edge" "$@"
exit 70
"""


SHARDS = 4


def _tar_gz(folder: Path, paths: list[Path]) -> bytes:
    """``paths`` (inside ``folder``) as a gzip'd tar, owners and times fixed: the same files give the same bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in paths:
            info = tar.gettarinfo(str(path), str(path.relative_to(folder)))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if info.isfile():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return gzip.compress(buf.getvalue(), compresslevel=9, mtime=0)


def shards(folder: Path, count: int = SHARDS) -> list[bytes]:
    """The folder as gzip'd tars: the folders alone (in path order, so a parent comes before its children), then
    ``count`` tars of the files (and links) of about equal size, the largest first going to the lightest; the same
    build gives the same bytes."""
    entries = sorted(folder.rglob("*"))
    folders = [p for p in entries if p.is_dir() and not p.is_symlink()]
    is_folder = set(folders)
    files = sorted((p for p in entries if p not in is_folder),
                   key=lambda p: (-(p.lstat().st_size if not p.is_symlink() else 0), str(p)))
    groups: list[list[Path]] = [[] for _ in range(count)]
    loads = [0] * count
    for path in files:
        i = loads.index(min(loads))
        groups[i].append(path)
        loads[i] += path.lstat().st_size
    return [_tar_gz(folder, folders)] + [_tar_gz(folder, sorted(g, key=str)) for g in groups]


def header(parts: list[bytes]) -> bytes:
    """The shell header for ``parts``; its own length is written into it (``skip``), so it is fixed by iteration."""
    digest = hashlib.sha256(b"".join(parts)).hexdigest()
    table, at = [], 0
    for part in parts:
        table.append(f"{at}:{len(part)}")
        at += len(part)
    skip = 0
    while True:
        text = HEADER.format(digest=digest, id=digest[:16], skip=skip, shards=" ".join(table)).encode() + MARKER
        if len(text) == skip:
            return text
        skip = len(text)


def read_shards(path: Path) -> list[bytes]:
    """The gzip'd tars of a packed binary, in the header's order."""
    data = path.read_bytes()
    at = data.find(MARKER, 0, 1 << 16)
    if not data.startswith(b"#!/bin/sh\n") or at < 0:
        raise ValueError(f"{path}: not a binary packed by {Path(__file__).name}")
    head, body = data[:at].decode(), data[at + len(MARKER):]
    table = next(line for line in head.splitlines() if line.startswith("shards="))
    out = []
    for entry in table.split("=", 1)[1].strip('"').split():
        off, length = (int(v) for v in entry.split(":"))
        out.append(body[off:off + length])
    return out


def pack(folder: Path, out: Path) -> int:
    if not (folder / "facelink-edge").is_file():
        raise FileNotFoundError(f"{folder}/facelink-edge: no such file (the PyInstaller folder build)")
    parts = shards(folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_bytes(header(parts) + b"".join(parts))
    os.chmod(tmp, 0o755)
    tmp.replace(out)
    return out.stat().st_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="the PyInstaller folder build (holds facelink-edge and _internal/)")
    ap.add_argument("out", type=Path, help="the one-file binary to write")
    args = ap.parse_args(argv)
    try:
        size = pack(args.folder, args.out)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 2
    print(f"{args.out}: {size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
