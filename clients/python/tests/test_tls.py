"""``ca_file`` and ``token`` through a real TLS connection: a TLS-terminating forwarder (what a
deployment puts in front of Vigil) between the reporter and the real server. The forwarder
records each request's headers as it passes them on, so the bearer token is seen on the wire."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from conftest import VigilServer, messages, wait_until
from vigil_reporter import Reporter


class TlsForwarder:
    """Accepts TLS on a loopback port and forwards the plain bytes to ``target``."""

    def __init__(self, cert: Path, key: Path, target: Tuple[str, int]) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: List[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            client = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()  # the reporter refused our certificate: the case under test
            return
        upstream = socket.create_connection(self.target)

        def pump(source: socket.socket, sink: socket.socket, record: bool) -> None:
            try:
                while True:
                    data = source.recv(65536)
                    if not data:
                        break
                    if record:
                        self.requests.append(data)
                    sink.sendall(data)
            except OSError:
                pass
            finally:
                for s in (source, sink):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(upstream, client, False), daemon=True).start()
        pump(client, upstream, True)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def certificate(tmp_path: Path) -> Tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def forwarder(server: VigilServer, certificate: Tuple[Path, Path]) -> Iterator[TlsForwarder]:
    running = TlsForwarder(*certificate, ("127.0.0.1", server.port))
    yield running
    running.close()


def test_https_with_a_ca_file_and_a_token(
    server: VigilServer, forwarder: TlsForwarder, certificate: Tuple[Path, Path]
) -> None:
    url = f"https://127.0.0.1:{forwarder.port}"
    token = server.agent_token
    with Reporter(url, "tls-node", "cinder-volume", report_interval=0.2, token=token, ca_file=str(certificate[0])) as reporter:
        wait_until("beats through TLS", lambda: reporter.report_count >= 2)
    assert server.service("tls-node", "cinder-volume")["report_count"] >= 2  # type: ignore[index]
    seen = b"".join(forwarder.requests)
    assert b"POST /v1/services HTTP/1.1" in seen
    assert b"\r\nAuthorization: Bearer " + token.encode() + b"\r\n" in seen


def test_https_without_the_ca_file_refuses_the_certificate(
    server: VigilServer, forwarder: TlsForwarder, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"https://127.0.0.1:{forwarder.port}"
    reporter = Reporter(url, "tls-node-2", "cinder-volume", report_interval=0.1).start()
    wait_until("a refused certificate", lambda: messages(caplog.records, "lost connection"))
    reporter.stop()
    assert reporter.service_id is None
    assert "CERTIFICATE_VERIFY_FAILED" in messages(caplog.records, "lost connection")[0]
    assert server.service("tls-node-2", "cinder-volume") is None


def test_a_missing_ca_file_is_an_error_of_the_settings(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        Reporter("https://127.0.0.1:1", "h", "b", ca_file=str(tmp_path / "none.pem"))
