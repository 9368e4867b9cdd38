"""gRPC client for the facelink server: streaming recognition, enrollment, model information.

Connection security, as the server asks for it (``facelink serve --tls-cert/--tls-key [--client-ca] [--auth-tokens]``):

- ``tls_ca``: connect with TLS, trusting server certificates signed by this CA (PEM file); ``server_name`` is the
  name the certificate must carry when it is not the target's host (an IP address target, several servers).
- ``tls_cert``/``tls_key``: the client certificate and key (PEM files) for mutual TLS; they need ``tls_ca``.
- ``token``: a bearer token (``facelink tokens add``), sent as ``authorization: Bearer …`` with every call.

Several servers (replicas on one gallery): ``target`` as ``"HOST:PORT,HOST:PORT"`` or a list; the channel spreads
calls (each stream is one call) over them with gRPC's ``round_robin`` policy and leaves out a server that stops
answering. Host names are resolved once, here.
"""
from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import grpc

from facelink.v1 import facelink_pb2 as pb
from facelink.v1 import facelink_pb2_grpc as pb_grpc

ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def _split(address: str) -> tuple[str, str]:
    host, sep, port = address.strip().rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"server address {address!r} is not HOST:PORT")
    return host.strip("[]"), port


def _resolved(host: str, port: str) -> list[str]:
    """``ip:port`` entries (IPv6 bracketed) for a host name or literal."""
    try:
        ip = ipaddress.ip_address(host)
        return [f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ValueError(f"cannot resolve server {host!r}: {e.strerror}") from None
    out = []
    for family, *_, sockaddr in infos:
        entry = f"[{sockaddr[0]}]:{port}" if family == socket.AF_INET6 else f"{sockaddr[0]}:{port}"
        if entry not in out:
            out.append(entry)
    return out


def channel_target(target: str | Sequence[str]) -> tuple[str, list[tuple[str, str]], str]:
    """(gRPC target, extra channel options, the first host) for one address or several."""
    addresses = [a for a in (target.split(",") if isinstance(target, str) else target) if a.strip()]
    if not addresses:
        raise ValueError("no server address given")
    if len(addresses) == 1:
        return addresses[0].strip(), [], _split(addresses[0])[0]
    entries = [e for a in addresses for e in _resolved(*_split(a))]
    families = {"ipv6" if e.startswith("[") else "ipv4" for e in entries}
    if len(families) > 1:
        raise ValueError("several servers must all be IPv4 or all IPv6")
    return f"{families.pop()}:{','.join(entries)}", [("grpc.service_config", ROUND_ROBIN)], _split(addresses[0])[0]


def _read(path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None


class Client:
    def __init__(self, target: str | Sequence[str], timeout: float = 30.0, max_message_bytes: int = 64 << 20, *,
                 tls_ca: str | Path | None = None, tls_cert: str | Path | None = None,
                 tls_key: str | Path | None = None, token: str | None = None, server_name: str | None = None):
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("a client certificate needs its key: give tls_cert and tls_key together")
        if tls_cert is not None and tls_ca is None:
            raise ValueError("mutual TLS (tls_cert/tls_key) needs tls_ca, the CA that signed the server")
        address, options, first_host = channel_target(target)
        options += [("grpc.max_send_message_length", max_message_bytes),
                    ("grpc.max_receive_message_length", max_message_bytes)]
        if tls_ca is not None:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(tls_ca), private_key=_read(tls_key) if tls_key else None,
                certificate_chain=_read(tls_cert) if tls_cert else None)
            name = server_name or (None if address == target else first_host)
            if name:
                options.append(("grpc.ssl_target_name_override", name))
            self.channel = grpc.secure_channel(address, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(address, options=options)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.stub = pb_grpc.FaceLinkStub(self.channel)
        self.timeout = timeout

    def wait_ready(self, timeout: float = 30.0) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def model_info(self) -> pb.ModelInfoResponse:
        return self.stub.GetModelInfo(pb.ModelInfoRequest(), timeout=self.timeout, metadata=self.metadata)

    def enroll(self, identity: str, *, bitstream: bytes | None = None, image: bytes | None = None,
               source_name: str = "") -> pb.EnrollResponse:
        if (bitstream is None) == (image is None):
            raise ValueError("give exactly one of bitstream= or image=")
        req = pb.EnrollRequest(identity=identity, source_name=source_name)
        if bitstream is not None:
            req.bitstream = bitstream
        else:
            req.image = image
        return self.stub.Enroll(req, timeout=self.timeout, metadata=self.metadata)

    def identities(self) -> pb.ListIdentitiesResponse:
        return self.stub.ListIdentities(pb.ListIdentitiesRequest(), timeout=self.timeout, metadata=self.metadata)

    def recognize_stream(self, requests: Iterable[pb.RecognizeRequest]) -> Iterator[pb.RecognizeResponse]:
        """Send requests as they are produced; yield responses as they arrive."""
        return self.stub.Recognize(iter(requests), metadata=self.metadata)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def request(rid: str, data: bytes, source: str = "", top_k: int = 0) -> pb.RecognizeRequest:
    return pb.RecognizeRequest(id=rid, bitstream=data, source=source, top_k=top_k)
