"""Bearer-token auth and (mutual) TLS over real channels."""

import datetime
import ipaddress

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.pb import guard_pb2 as pb
from server.pb import guard_pb2_grpc
from tests.scripted_engine import ScriptedEngine
from tests.server.conftest import start_server, stop_server

REQUEST = pb.GuardRequest(question="q?", num_paths=2, scorer="majority")


async def test_bearer_token_required_health_open():
    handle = await start_server(ScriptedEngine(paths=[" Answer: 1"]), auth_token="s3cret")
    try:
        stub = guard_pb2_grpc.GuardServiceStub(handle.channel)
        for metadata in (None, (("authorization", "Bearer wrong"),), (("authorization", "s3cret"),)):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Guard(REQUEST, metadata=metadata)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        resp = await stub.Guard(REQUEST, metadata=(("authorization", "Bearer s3cret"),))
        assert resp.answer.normalized == "1"
        health = await health_pb2_grpc.HealthStub(handle.channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await stop_server(handle)


async def test_health_can_be_protected_too():
    handle = await start_server(ScriptedEngine(), auth_token="s3cret", auth_health_open=False)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await health_pb2_grpc.HealthStub(handle.channel).Check(health_pb2.HealthCheckRequest())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await stop_server(handle)


def _pki(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def make(name, issuer_key=None, issuer_name=None, ca=False, san=None):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name or subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(issuer_key or key, hashes.SHA256())
        return key, cert

    ca_key, ca_cert = make("test-ca", ca=True)
    srv_key, srv_cert = make("localhost", ca_key, ca_cert.subject,
                             san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cli_key, cli_cert = make("client", ca_key, ca_cert.subject)
    files = {}
    for name, obj in [("ca", ca_cert), ("srv", srv_cert), ("cli", cli_cert)]:
        files[name] = tmp_path / f"{name}.crt"
        files[name].write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    for name, key in [("srv_key", srv_key), ("cli_key", cli_key)]:
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return files


async def test_mutual_tls(tmp_path):
    f = _pki(tmp_path)
    handle = await start_server(
        ScriptedEngine(paths=[" Answer: 4"]),
        tls_cert_file=str(f["srv"]), tls_key_file=str(f["srv_key"]), tls_client_ca_file=str(f["ca"]),
    )
    target = f"localhost:{handle.server.port}"
    try:
        with_cert = grpc.ssl_channel_credentials(
            f["ca"].read_bytes(), f["cli_key"].read_bytes(), f["cli"].read_bytes())
        async with grpc.aio.secure_channel(target, with_cert) as channel:
            resp = await guard_pb2_grpc.GuardServiceStub(channel).Guard(REQUEST, timeout=10)
            assert resp.answer.normalized == "4"
        without_cert = grpc.ssl_channel_credentials(f["ca"].read_bytes())
        async with grpc.aio.secure_channel(target, without_cert) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await guard_pb2_grpc.GuardServiceStub(channel).Guard(REQUEST, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        # A plaintext client cannot talk to a TLS server at all.
        async with grpc.aio.insecure_channel(target) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await guard_pb2_grpc.GuardServiceStub(channel).Guard(REQUEST, timeout=5)
    finally:
        await stop_server(handle)


async def test_oversized_message_is_refused_and_the_server_keeps_serving():
    handle = await start_server(ScriptedEngine(paths=[" Answer: 12"]), max_message_bytes=4096)
    try:
        stub = guard_pb2_grpc.GuardServiceStub(handle.channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Guard(pb.GuardRequest(question="x" * 5000), timeout=10)
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await stub.Guard(pb.GuardRequest(question="q?", num_paths=1), timeout=10)).answer.normalized == "12"
    finally:
        await stop_server(handle)
