"""The first thing ``facelink serve`` checks: that its port can be bound. It needs only the standard library's
``socket``, so a port in use is refused before the configuration's schema, logging, torch or the models load.
"""
from __future__ import annotations

import errno
import socket

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50051


class ServeRefused(RuntimeError):
    """The configuration would expose the server unsafely, or its port cannot be bound; the message says why."""


def check_port_free(host: str, port: int) -> None:
    """Refuse (:class:`ServeRefused`) at once when ``host:port`` cannot be bound: another process listens there (a
    server never shares its port) or the address is not this machine's. Port 0 (any free port) always passes. The
    server's own bind checks again; this one only answers before the models load."""
    if not 0 <= port <= 0xFFFF:  # the resolver would take it modulo 65536, and so would gRPC's bind
        raise ServeRefused(f"cannot bind {host}:{port}: a port is a number from 0 to 65535")
    if port == 0:
        return
    name = host.strip("[]")
    try:  # an ASCII name as bytes: no IDNA codec to import (a few ms of the refusal's time)
        infos = socket.getaddrinfo(name.encode() if name.isascii() else name, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ServeRefused(f"cannot bind {host}:{port}: {e.strerror}") from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds: TIME_WAIT is no conflict
            try:
                probe.bind(address)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise ServeRefused(f"cannot bind {host}:{port}: the port is in use (facelink never shares a "
                                       "port)") from None
                if len(infos) == 1:  # one address, and not this machine's (a name with several: gRPC binds any)
                    raise ServeRefused(f"cannot bind {host}:{port}: {e.strerror}") from None
