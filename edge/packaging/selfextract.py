"""Pack the PyInstaller folder build of the edge into one file that unpacks itself once, not at every launch.

  python edge/packaging/selfextract.py build/edge-binary/dist/facelink-edge dist/facelink-edge

The result is a POSIX shell header followed by a gzip'd tar of the folder (the PyInstaller "onedir" build: its
launcher, ``_internal/`` with Python, the libraries, the default rate point and YuNet). At launch the header looks
for that build's folder in a private cache, ``$FACELINK_EDGE_CACHE`` or else ``$XDG_CACHE_HOME/facelink-edge`` or
``~/.cache/facelink-edge`` (``$TMPDIR/facelink-edge-UID`` without a home), under the payload's sha256; when absent
it unpacks the payload into a fresh folder beside it and publishes it with one atomic symbolic link (two launches at
once each unpack, one link wins, the other's copy is removed), then ``exec``s the launcher in it: arguments, exit
status and signals are the program's own. The cache folder must belong to the user and be writable by no one else.

Why: PyInstaller's one-file mode inflates and writes its whole archive (about 280 MB of libraries: OpenCV, two
OpenBLAS builds, onnxruntime, gRPC, Python) into a new temporary folder at every launch and deletes it at exit;
that was most of the one-file binary's start-up (``facelink bench edge-binary`` times both). Here only the first
launch of a build pays it. The header needs ``sh``, ``tail``, ``tar`` with gzip, ``ls``, ``awk``, ``cut``,
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
# facelink-edge: the edge client in one file. A shell header (this), then a gzip'd tar of the program's folder.
# The first launch of this build unpacks it into a private cache folder; every launch runs it from there.
# Packed by edge/packaging/selfextract.py; payload sha256 {digest}.
id={id}
skip={skip}
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
  if ! tail -c +$((skip + 1)) "$0" | tar -xzf - -C "$tmp"; then
    rm -rf "$tmp"; echo "facelink-edge: cannot unpack $0 into $base" >&2; exit 70
  fi
  ln -sn "${{tmp##*/}}" "$dir" 2>/dev/null || rm -rf "$tmp"  # another launch published first: use its copy
fi
exec "$dir/facelink-edge" "$@"
exit 70
"""


def payload(folder: Path) -> bytes:
    """The folder as a gzip'd tar, entries sorted, owners and times fixed: the same build gives the same bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(folder.rglob("*")):
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


def header(data: bytes) -> bytes:
    """The shell header for ``data``; its length is written into it (``skip``), so it is fixed by iteration."""
    digest = hashlib.sha256(data).hexdigest()
    skip = 0
    while True:
        text = HEADER.format(digest=digest, id=digest[:16], skip=skip).encode() + MARKER
        if len(text) == skip:
            return text
        skip = len(text)


def read_payload(path: Path) -> bytes:
    """The gzip'd tar of a packed binary (what follows the marker)."""
    data = path.read_bytes()
    at = data.find(MARKER, 0, 1 << 16)
    if not data.startswith(b"#!/bin/sh\n") or at < 0:
        raise ValueError(f"{path}: not a binary packed by {Path(__file__).name}")
    return data[at + len(MARKER):]


def pack(folder: Path, out: Path) -> int:
    if not (folder / "facelink-edge").is_file():
        raise FileNotFoundError(f"{folder}/facelink-edge: no such file (the PyInstaller folder build)")
    data = payload(folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_bytes(header(data) + data)
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
