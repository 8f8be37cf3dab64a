"""Optional HTTPS listener (BROKER_HTTPS_PORT) for clients that insist on https.

waitress speaks plain HTTP only, so TLS is terminated here and each connection is piped to the
plain listener on loopback: one HTTP implementation, and keep-alive works end to end. Without
BROKER_TLS_CERT/BROKER_TLS_KEY a self-signed certificate for localhost, 127.0.0.1 and the
container's host name is generated once into the data dir and reused.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import socket
import ssl
import threading
from pathlib import Path

log = logging.getLogger("broker.tls")


def ensure_certificate(data_dir: Path, cert: Path | None, key: Path | None) -> tuple[Path, Path]:
    if cert and key:
        return cert, key
    cert, key = data_dir / "tls" / "cert.pem", data_dir / "tls" / "key.pem"
    if cert.exists() and key.exists():
        return cert, key
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    names = ["localhost", socket.gethostname(), "broker"]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Event Grid emulator (self-signed)")])
    now = datetime.datetime.now(datetime.timezone.utc)
    san = [x509.DNSName(n) for n in dict.fromkeys(names)] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.parent.mkdir(parents=True, exist_ok=True)
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key.chmod(0o600)
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    log.info("generated a self-signed certificate", extra={"cert": str(cert)})
    return cert, key


class TlsTerminator:
    """Accepts TLS on `port` and pipes each connection to the plain HTTP listener."""

    def __init__(self, host: str, port: int, backend_port: int, cert: Path, key: Path) -> None:
        self.host, self.port, self.backend_port = host, port, backend_port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="tls", daemon=True).start()
        if not self._ready.wait(10):
            raise RuntimeError(f"HTTPS listener on port {self.port} did not start")

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, self.host, self.port, ssl=self.context))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            backend_reader, backend_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, backend_writer), _pipe(backend_reader, client_writer))

    def stop(self) -> None:
        if self._loop:
            self._loop.call_soon_threadsafe(self._loop.stop)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.close()
        except (ConnectionError, ssl.SSLError, RuntimeError):
            pass
