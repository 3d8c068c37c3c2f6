"""Storage test fixtures: moto's S3 server over real HTTP, a test CA, loopback HTTP(S) servers.

The contract suite runs against both backends through `backend`; everything that must
hold after a failure ("nothing half-written remains") is checked with `assert_nothing_stored`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from moto.server import ThreadedMotoServer

from storage import Ingestor, StorageConfig, open_storage
from tests.storage.helpers import Backend, CertAuthority
from tests.storage.httpserver import LoopbackServer, serve

if TYPE_CHECKING:
    from types_boto3_s3.client import S3Client

CERT_NAMES = ("cdn.test", "evil.test", "localhost")


# -- S3 (moto server mode, real HTTP on loopback) ----------------------------------------------


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials read by boto3 itself; no user config files leak in."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def s3_admin(s3_endpoint: str) -> S3Client:
    """The tests' own client (explicit fake credentials; the code under test reads env)."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def s3_client(s3_admin: S3Client, aws_env: None) -> S3Client:
    return s3_admin


@pytest.fixture
def bucket(s3_client: S3Client) -> str:
    name = f"blobs-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


# -- one contract, two backends ------------------------------------------------------------------


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    tmp_dir = tmp_path / "tmp"
    if request.param == "local":
        config = StorageConfig(storage_url=f"file://{tmp_path / 'root'}", tmp_dir=None)
        return Backend("local", config, lambda uri: Path(uri).read_bytes(), tmp_path / "root/.tmp")
    s3_client: S3Client = request.getfixturevalue("s3_client")
    endpoint: str = request.getfixturevalue("s3_endpoint")
    name: str = request.getfixturevalue("bucket")
    config = StorageConfig(
        storage_url=f"s3://{name}/pre/fix", s3_endpoint_url=endpoint, tmp_dir=tmp_dir
    )

    def read(uri: str) -> bytes:
        assert uri.startswith(f"s3://{name}/")
        key = uri.removeprefix(f"s3://{name}/")
        return s3_client.get_object(Bucket=name, Key=key)["Body"].read()

    return Backend("s3", config, read, tmp_dir)


@pytest.fixture
async def ingestor(backend: Backend) -> AsyncIterator[Ingestor]:
    async with open_storage(backend.config) as opened:
        yield opened


# -- TLS: a throwaway CA and a leaf certificate for the test host names ---------------------------


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(
    subject: str, issuer: str, key: Any, signer: Any, *, ca: bool, sans: Sequence[str] = ()
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in sans]
        names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture(scope="session")
def cert_authority(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("test CA", "test CA", ca_key, ca_key, ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _certificate("cdn.test", "test CA", leaf_key, ca_key, ca=False, sans=CERT_NAMES)
    directory = tmp_path_factory.mktemp("tls")
    (directory / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (directory / "leaf.key").write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(directory / "leaf.pem", directory / "leaf.key")
    client = ssl.create_default_context(
        cadata=ca_cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    )
    return CertAuthority(server_context=server, client_context=client)


# -- HTTP servers ---------------------------------------------------------------------------------


@pytest.fixture
def http_server() -> Iterator[LoopbackServer]:
    with serve() as server:
        yield server


@pytest.fixture
def https_server(cert_authority: CertAuthority) -> Iterator[LoopbackServer]:
    with serve(tls=cert_authority.server_context) as server:
        yield server
