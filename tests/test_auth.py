"""Security of the server: TLS, mutual TLS, bearer tokens with roles through one interceptor, tokens hashed at rest,
what may listen where, and an exclusive port. A real server on loopback with a throw-away CA made here."""
import datetime as dt
import ipaddress
import stat

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_support import ServerThread

from facelink.cloud.serving import auth
from facelink.cloud.serving.server import ServerConfig, ServeRefused, check_exposure
from facelink.edge.client import Client, request
from facelink.edge.encoder import EdgePipeline
from facelink.shared.registry import DEFAULT_MODEL
from facelink.v1 import facelink_pb2 as pb


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key, issuer=None, issuer_key=None, ca=False, server=False):
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject if issuer else name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
    return b.sign(issuer_key or key, hashes.SHA256())


def _pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for localhost/127.0.0.1, a client certificate, and a client of a rogue CA."""
    d = tmp_path_factory.mktemp("pki")
    ca_key, rogue_key = _key(), _key()
    ca, rogue = _cert("facelink test CA", ca_key, ca=True), _cert("rogue CA", rogue_key, ca=True)
    files = {}
    for name, cert in [("ca", ca), ("rogue-ca", rogue)]:
        files[name] = d / f"{name}.crt"
        files[name].write_bytes(_pem(cert))
    for name, issuer, issuer_key, server in [("server", ca, ca_key, True), ("client", ca, ca_key, False),
                                             ("rogue", rogue, rogue_key, False)]:
        key = _key()
        (d / f"{name}.crt").write_bytes(_pem(_cert(name, key, issuer, issuer_key, server=server)))
        (d / f"{name}.key").write_bytes(_pem(key))
        files[name] = (d / f"{name}.crt", d / f"{name}.key")
    return files


@pytest.fixture(scope="module")
def secured(tmp_path_factory, pki):
    """A server with TLS, mutual TLS and tokens: one admin, one edge."""
    d = tmp_path_factory.mktemp("secured")
    tokens = d / "tokens.txt"
    admin, edge = auth.add_token(tokens, "alice", "admin"), auth.add_token(tokens, "cam-1", "edge")
    cert, key = pki["server"]
    with ServerThread(gallery=str(d / "gallery.db"), tls_cert=str(cert), tls_key=str(key),
                      client_ca=str(pki["ca"]), auth_tokens=str(tokens)) as s:
        yield {"target": s.target, "admin": admin, "edge": edge, "tokens": tokens, "server": s}


def _client(secured, pki, token=None, cert="client", **kw):
    c, k = pki[cert]
    return Client(secured["target"], timeout=20, tls_ca=pki["ca"], tls_cert=c, tls_key=k, token=token,
                  server_name="localhost", **kw)


def _code(fn):
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value.code()


def test_tokens_are_stored_hashed_and_printed_once(tmp_path, capsys):
    f = tmp_path / "tokens.txt"
    assert auth.main(["add", "ops", "admin", "--file", str(f)]) == 0
    token = capsys.readouterr().out.strip()
    text = f.read_text()
    assert token.startswith(auth.TOKEN_PREFIX) and token not in text
    assert auth.hash_token(token) + " admin ops" in text
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert auth.main(["add", "ops", "edge", "--file", str(f)]) == 2  # names are unique
    assert auth.main(["list", "--file", str(f)]) == 0 and capsys.readouterr().out == "ops\tadmin\n"
    assert auth.TokenStore(f).lookup(token) == auth.Principal("ops", "admin")
    assert auth.main(["remove", "ops", "--file", str(f)]) == 0
    with pytest.raises(auth.TokenFileError, match="no tokens"):
        auth.TokenStore(f)
    f.write_text(f"{token} admin ops\n")  # a token in clear is refused: hashed at rest
    with pytest.raises(auth.TokenFileError, match="hashed"):
        auth.TokenStore(f)


def test_roles_through_one_interceptor(secured, pki, face_rgb):
    crop = EdgePipeline(DEFAULT_MODEL).process(face_rgb).data
    with _client(secured, pki) as anonymous:
        assert _code(anonymous.model_info) == grpc.StatusCode.UNAUTHENTICATED
        assert _code(lambda: list(anonymous.recognize_stream([request("a", crop)]))) == grpc.StatusCode.UNAUTHENTICATED
        assert _code(lambda: anonymous.enroll("X", bitstream=crop)) == grpc.StatusCode.UNAUTHENTICATED
    with _client(secured, pki, token=auth.TOKEN_PREFIX + "not-a-token") as wrong:
        assert _code(wrong.identities) == grpc.StatusCode.UNAUTHENTICATED
    with _client(secured, pki, token=secured["edge"]) as edge:
        assert edge.model_info().server_version
        (r,) = edge.recognize_stream([request("e", crop)])
        assert r.WhichOneof("outcome") == "result"
        # an edge token cannot poison, read or erase the gallery
        assert _code(lambda: edge.enroll("Mallory", bitstream=crop)) == grpc.StatusCode.PERMISSION_DENIED
        assert _code(edge.identities) == grpc.StatusCode.PERMISSION_DENIED
        assert _code(lambda: edge.stub.DeleteIdentity(pb.DeleteIdentityRequest(identity="Mallory"),
                                                      metadata=edge.metadata)) == grpc.StatusCode.PERMISSION_DENIED
    with _client(secured, pki, token=secured["admin"]) as admin:
        assert admin.enroll("Colin Powell", bitstream=crop, source_name="c.flk").samples == 1
        (ident,) = admin.identities().identities
        assert [s.enrolled_by for s in ident.sample_records] == ["alice"]  # the token's name, for the audit
    with _client(secured, pki) as anonymous:  # health is open: orchestrators' probes carry no token
        status = health_pb2_grpc.HealthStub(anonymous.channel).Check(health_pb2.HealthCheckRequest(), timeout=20)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
    denied = secured["server"].service.metrics.text()
    assert 'facelink_calls_denied_total{code="UNAUTHENTICATED"} 4.0' in denied
    assert 'facelink_calls_denied_total{code="PERMISSION_DENIED"} 3.0' in denied


def test_transport_is_tls_with_client_certificates(secured, pki):
    with Client(secured["target"], timeout=10, token=secured["admin"]) as plaintext:
        assert _code(plaintext.model_info) == grpc.StatusCode.UNAVAILABLE
    with Client(secured["target"], timeout=10, tls_ca=pki["ca"], token=secured["admin"],
                server_name="localhost") as no_client_cert:
        assert _code(no_client_cert.model_info) == grpc.StatusCode.UNAVAILABLE
    with _client(secured, pki, token=secured["admin"], cert="rogue") as rogue:
        assert _code(rogue.model_info) == grpc.StatusCode.UNAVAILABLE
    with Client(secured["target"], timeout=10, tls_ca=pki["rogue-ca"], tls_cert=pki["client"][0],
                tls_key=pki["client"][1], token=secured["admin"], server_name="localhost") as untrusted_server:
        assert _code(untrusted_server.model_info) == grpc.StatusCode.UNAVAILABLE
    with _client(secured, pki, token=secured["admin"]) as good:
        assert good.model_info().recognizer == "mobilefacenet"


def test_second_server_on_a_bound_port_refuses_to_start(secured, tmp_path):
    port = secured["server"].port
    with pytest.raises(ServeRefused, match="in use"):
        with ServerThread(gallery=str(tmp_path / "g.db"), port=port):
            pass
    from facelink.cloud.serving import server as srv

    assert srv.main(["--port", str(port), "--gallery", str(tmp_path / "g.db"), "--model", DEFAULT_MODEL]) == 2


def test_the_port_is_checked_before_anything_loads():
    """facelink serve asks the port first (settings.check_port_free, no torch): a listener there refuses the start,
    a free port, port 0 and a port in TIME_WAIT pass; serve_command imports nothing heavy before it."""
    import socket
    import subprocess
    import sys

    from facelink.cloud.serving.settings import check_port_free

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServeRefused, match="in use"):
            check_port_free("127.0.0.1", port)
        with pytest.raises(ServeRefused, match="in use"):
            check_port_free("localhost", port)
    check_port_free("127.0.0.1", port)  # closed: free again
    check_port_free("127.0.0.1", 0)
    probe = ("import sys; from facelink.cloud.serving import serve_command; "
             "print(sorted(m for m in ('torch', 'numpy', 'cv2', 'grpc') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"
    # a port in use is refused before the configuration's schema, logging or the settings load
    heavy = ("torch", "numpy", "grpc", "logging", "dataclasses", "facelink.shared.config",
             "facelink.cloud.serving.settings")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        probe = ("import sys; from facelink.cloud import cli; "
                 f"rc = cli.main(['serve', '--port', '{taken.getsockname()[1]}']); "
                 f"print(rc, sorted(m for m in {heavy!r} if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "2 []" and "the port is in use" in out.stderr
    with pytest.raises(ServeRefused, match="0 to 65535"):
        check_port_free("127.0.0.1", 99999)  # the resolver would take it modulo 65536


@pytest.mark.parametrize("host, extra, ok", [
    ("127.0.0.1", {}, True), ("::1", {}, True), ("localhost", {}, True),
    ("0.0.0.0", {}, False), ("192.0.2.10", {"auth_tokens": "t"}, False),
    ("0.0.0.0", {"tls_cert": "c", "tls_key": "k"}, False),
    ("0.0.0.0", {"tls_cert": "c", "tls_key": "k", "auth_tokens": "t"}, True),
    ("0.0.0.0", {"insecure": True}, True),
])
def test_plaintext_or_open_only_on_loopback(host, extra, ok):
    cfg = ServerConfig(host=host, **extra)
    if ok:
        warnings = check_exposure(cfg)
        assert bool(warnings) == (extra == {"insecure": True})
    else:
        with pytest.raises(ServeRefused, match="--insecure"):
            check_exposure(cfg)


def test_half_a_tls_configuration_is_refused():
    with pytest.raises(ServeRefused, match="both"):
        check_exposure(ServerConfig(tls_cert="c"))
    with pytest.raises(ServeRefused, match="mutual TLS"):
        check_exposure(ServerConfig(client_ca="ca"))
