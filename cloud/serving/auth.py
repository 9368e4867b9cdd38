"""Bearer-token authentication and roles for the facelink server, and ``facelink tokens`` to manage the token file.

The token file (``facelink serve --auth-tokens FILE``) holds one token per line as ``sha256:<hex> <role> <name>``:
the SHA-256 of the token, never the token itself, so a copy of the file does not let anyone in. Tokens are
256-bit random strings (``facelink tokens add NAME ROLE --file F`` makes one, prints it once and stores its hash),
so an unsalted SHA-256 is as strong as the token. ``#`` starts a comment. A line that holds anything but a hash is
an error at start-up: tokens are hashed at rest. ``kill -HUP`` makes a running server re-read the file.

Roles:

- ``edge``: Recognize and GetModelInfo; what a camera needs, nothing that changes or reveals the gallery.
- ``admin``: every call (Enroll, ListIdentities, DeleteIdentity, RemoveSample, ...), server reflection included.

One :class:`AuthInterceptor` (a ``grpc.aio`` server interceptor) checks every call, unary and streaming alike,
before the handler runs: no or unknown token → ``UNAUTHENTICATED``; a role that does not cover the method →
``PERMISSION_DENIED``. Health checking (``grpc.health.v1.Health``) is open, for load balancers and orchestrators
that cannot send a token; it tells nothing but SERVING / NOT_SERVING. A FaceLink method added later is admin-only
until it is listed for ``edge`` here.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import re
import secrets
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

ROLES = ("edge", "admin")
SERVICE = "/facelink.v1.FaceLink/"
EDGE_METHODS = frozenset({SERVICE + "Recognize", SERVICE + "GetModelInfo"})
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
HASH_PREFIX = "sha256:"
TOKEN_PREFIX = "flk_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


class TokenFileError(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    """Who a call comes from: the token's name (recorded as ``enrolled_by``) and role."""

    name: str
    role: str


ANONYMOUS = Principal("", "admin")  # a server without --auth-tokens (loopback, or --insecure)


def hash_token(token: str) -> str:
    return HASH_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def allowed(role: str, method: str) -> bool:
    return role == "admin" or (role == "edge" and method in EDGE_METHODS)


def parse_token_file(text: str, where: str = "token file") -> dict[str, Principal]:
    """``{hash: Principal}`` from a token file's text; :class:`TokenFileError` naming the line that is wrong."""
    entries: dict[str, Principal] = {}
    names: set[str] = set()
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if not fields[0].startswith(HASH_PREFIX):
            raise TokenFileError(f"{where}:{n}: expected 'sha256:<hex> ROLE NAME'; tokens are stored hashed, never in "
                                 "clear (make them with: facelink tokens add NAME ROLE --file FILE)")
        if len(fields) != 3:
            raise TokenFileError(f"{where}:{n}: expected 'sha256:<hex> ROLE NAME', got {len(fields)} fields")
        digest, role, name = fields
        if not _HASH.match(digest):
            raise TokenFileError(f"{where}:{n}: not a SHA-256 hash in hex")
        if role not in ROLES:
            raise TokenFileError(f"{where}:{n}: unknown role {role!r}; roles: {', '.join(ROLES)}")
        if not _NAME.match(name):
            raise TokenFileError(f"{where}:{n}: token name must be 1-64 of A-Z a-z 0-9 . _ @ - (got {name[:40]!r})")
        if digest in entries or name in names:
            raise TokenFileError(f"{where}:{n}: token or name {name!r} listed twice")
        entries[digest] = Principal(name, role)
        names.add(name)
    return entries


class TokenStore:
    """The token file, loaded at start and on :meth:`reload` (SIGHUP)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._entries: dict[str, Principal] = {}
        self.reload()

    def reload(self) -> int:
        try:
            text = self.path.read_text()
        except OSError as e:
            raise TokenFileError(f"cannot read the token file {self.path}: {e.strerror or e}") from None
        entries = parse_token_file(text, str(self.path))
        if not entries:
            raise TokenFileError(f"{self.path}: no tokens (add one with: facelink tokens add NAME ROLE --file "
                                 f"{self.path})")
        with self._lock:
            self._entries = entries
        return len(entries)

    def lookup(self, token: str) -> Principal | None:
        digest = hash_token(token)
        with self._lock:
            entries = self._entries
        found = None
        for known, principal in entries.items():  # constant time in the token, whichever entry matches
            if hmac.compare_digest(known, digest):
                found = principal
        return found


def bearer_token(metadata) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value[:7].lower() == "bearer ":
            return value[7:].strip()
    return None


def principal_of(store: TokenStore | None, metadata) -> Principal | None:
    """The caller of a call with this metadata (``ANONYMOUS`` when the server runs without tokens)."""
    if store is None:
        return ANONYMOUS
    token = bearer_token(metadata)
    return store.lookup(token) if token else None


def _deny(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that refuses the call."""
    async def refuse(request_or_iterator, context):
        await context.abort(code, message)

    kw = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, **kw)
    return grpc.unary_unary_rpc_method_handler(refuse, **kw)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Every call but health checks needs ``authorization: Bearer <token>`` of a role that covers its method."""

    def __init__(self, store: TokenStore, on_denied=None):
        self.store = store
        self.on_denied = on_denied  # called with the status code's name, for metrics

    async def intercept_service(self, continuation, details):
        method = details.method
        handler = await continuation(details)
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        principal = principal_of(self.store, details.invocation_metadata)
        if principal is None:
            code, message = grpc.StatusCode.UNAUTHENTICATED, "missing or unknown bearer token"
        elif not allowed(principal.role, method):
            code, message = (grpc.StatusCode.PERMISSION_DENIED,
                             f"token {principal.name!r} has role {principal.role}, which may not call {method}")
        else:
            return handler
        if self.on_denied is not None:
            self.on_denied(code.name)
        return _deny(handler, code, message)


# -- facelink tokens ------------------------------------------------------------------------------------------------
def _read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _write_lines(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(line + "\n" for line in lines))
    os.replace(tmp, path)


def add_token(path: str | Path, name: str, role: str) -> str:
    """Make a token, store its hash under ``name`` with ``role`` in the file (created 0600), return the token."""
    path = Path(path)
    if role not in ROLES:
        raise TokenFileError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    if not _NAME.match(name):
        raise TokenFileError("token name must be 1-64 of A-Z a-z 0-9 . _ @ -, starting with a letter or digit")
    lines = _read_lines(path)
    existing = parse_token_file("\n".join(lines), str(path))
    if name in {p.name for p in existing.values()}:
        raise TokenFileError(f"{path} already has a token named {name!r} (remove it first)")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    if not lines:
        lines = ["# facelink tokens: sha256:<hex of the token> ROLE NAME (made by facelink tokens add)"]
    _write_lines(path, lines + [f"{hash_token(token)} {role} {name}"])
    return token


def remove_token(path: str | Path, name: str) -> None:
    path = Path(path)
    lines = _read_lines(path)
    kept = [line for line in lines if line.split("#", 1)[0].split()[2:3] != [name]]
    if len(kept) == len(lines):
        raise TokenFileError(f"{path} has no token named {name!r}")
    _write_lines(path, kept)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="facelink tokens", description="Manage the server's bearer tokens (stored "
                                 "hashed: a token is printed once, when it is made).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    where = "the token file (facelink serve --auth-tokens FILE)"
    p = sub.add_parser("add", help="make a token for NAME with ROLE; prints it once, stores only its hash")
    p.add_argument("name", help="who the token is for (recorded with each enrolment it makes)")
    p.add_argument("role", choices=ROLES, help="edge: Recognize, GetModelInfo; admin: every call")
    p.add_argument("--file", required=True, type=Path, help=where + "; created (mode 600) if absent")
    p = sub.add_parser("list", help="token names and roles")
    p.add_argument("--file", required=True, type=Path, help=where)
    p = sub.add_parser("remove", help="revoke NAME's token (a running server forgets it on SIGHUP or restart)")
    p.add_argument("name", help="the token's name")
    p.add_argument("--file", required=True, type=Path, help=where)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "add":
            print(add_token(args.file, args.name, args.role))
            print(f"facelink tokens: {args.name} ({args.role}) added to {args.file}; the token above is not stored: "
                  "keep it now", file=sys.stderr)
        elif args.cmd == "list":
            for principal in parse_token_file(args.file.read_text(), str(args.file)).values():
                print(f"{principal.name}\t{principal.role}")
        else:
            remove_token(args.file, args.name)
            print(f"facelink tokens: {args.name} removed from {args.file}", file=sys.stderr)
    except (OSError, TokenFileError) as e:
        print(f"facelink tokens: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
