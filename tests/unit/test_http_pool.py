"""The upstream HTTP/1.1 client against small loopback servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from hybridroute.providers.http import (
    ConnectFailed,
    ConnectionLost,
    HttpPool,
    ResponseCutOff,
)

pytestmark = pytest.mark.anyio

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A loopback server running `handler` per connection; closes everything on exit."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.connections = 0
        self.server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            await self.handler(reader, writer)
        finally:
            writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self._writers:
            writer.close()
        for writer in self._writers:
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
        await self.server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            request = await read_request(reader)
        except asyncio.IncompleteReadError:
            return
        writer.write(ok(b"echo:" + request.split(b"\r\n\r\n", 1)[1]))
        await writer.drain()


@pytest.fixture
async def echo() -> AsyncIterator[Server]:
    async with Server(keep_alive) as server:
        yield server


async def post(pool: HttpPool, body: bytes = b"{}") -> tuple[int, bytes]:
    async with pool.request("POST", "/x", [("content-type", "application/json")], body) as r:
        return r.status, await r.read()


@contextlib.asynccontextmanager
async def pool_for(server: Server, scheme: str = "http", **kwargs: Any) -> AsyncIterator[HttpPool]:
    host = "localhost" if scheme == "https" else "127.0.0.1"
    pool = HttpPool(f"{scheme}://{host}:{server.port}", **kwargs)
    try:
        yield pool
    finally:
        await pool.aclose()


async def test_keep_alive_connections_are_reused(echo: Server):
    async with pool_for(echo) as pool:
        for i in range(5):
            assert await post(pool, b"n%d" % i) == (200, b"echo:n%d" % i)
    assert echo.connections == 1


async def test_concurrent_requests_wait_for_the_connection_limit(echo: Server):
    async with pool_for(echo, max_connections=2) as pool:
        results = await asyncio.gather(*(post(pool, b"%d" % i) for i in range(10)))
    assert sorted(results) == sorted((200, b"echo:%d" % i) for i in range(10))
    assert echo.connections <= 2


async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(ok(b"bye", b"connection: close\r\n"))
    await writer.drain()


async def test_connection_close_header_is_honoured():
    async with Server(once) as server, pool_for(server) as pool:
        assert await post(pool) == (200, b"bye")
        assert await post(pool) == (200, b"bye")
    assert server.connections == 2


async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    for part in (b"alpha", b"beta"):
        writer.write(b"%x\r\n%s\r\n" % (len(part), part))
        await writer.drain()
        await asyncio.sleep(0.05)
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def test_chunked_body_streams_as_it_arrives():
    async with (
        Server(chunked) as server,
        pool_for(server) as pool,
        pool.request("POST", "/s", [], b"") as response,
    ):
        parts = [chunk async for chunk in response.chunks()]
    assert b"".join(parts) == b"alphabeta"
    assert len(parts) == 2


async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten..")
    await writer.drain()


async def test_a_body_cut_off_mid_way_is_reported():
    async with Server(cut) as server, pool_for(server) as pool:
        with pytest.raises(ResponseCutOff, match="in the middle of the body"):
            await post(pool)


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)


async def test_a_connection_closed_before_any_response():
    async with Server(hang_up) as server, pool_for(server) as pool:
        with pytest.raises(ConnectionLost, match="before a response"):
            await post(pool)


async def legacy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")
    await writer.drain()


async def test_close_delimited_body_ends_with_the_connection():
    async with Server(legacy) as server, pool_for(server) as pool:
        assert await post(pool) == (200, b"until the end")


async def test_refused_connection_names_the_origin():
    async with Server(keep_alive) as server:
        port = server.port
    pool = HttpPool(f"http://127.0.0.1:{port}")
    with pytest.raises(ConnectFailed, match=rf"cannot connect to http://127\.0\.0\.1:{port}"):
        await post(pool)
    await pool.aclose()


async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            await read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        await asyncio.sleep(0.3)
        writer.write(ok(b"late"))
        await writer.drain()


async def test_a_cancelled_request_does_not_leave_its_connection_in_the_pool():
    async with Server(slow) as server, pool_for(server) as pool:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await post(pool)
        assert await post(pool) == (200, b"late")  # a fresh connection, not the abandoned one
    assert server.connections == 2


async def test_tls_with_a_trusted_certificate(tmp_path: Path):
    cert, key = _self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    async with Server(keep_alive, server_context) as server:
        async with pool_for(server, "https", ssl_context=trusting) as pool:
            assert await post(pool, b"secret") == (200, b"echo:secret")
        async with pool_for(server, "https") as untrusting:
            with pytest.raises(ConnectFailed, match="TLS handshake"):
                await post(untrusting)


def test_host_header_omits_default_ports():
    assert HttpPool("https://bedrock-runtime.eu-central-1.amazonaws.com").host_header == (
        "bedrock-runtime.eu-central-1.amazonaws.com"
    )
    assert HttpPool("http://127.0.0.1:9001").host_header == "127.0.0.1:9001"
    with pytest.raises(ValueError, match="not an http"):
        HttpPool("ftp://example")


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
