"""The webhook's TLS context serves a rotated certificate without a restart."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from app.injector.tls import ReloadingContext
from tests.unit.injector.injector_support import write_certificates


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[ReloadingContext, int, Path]]:
    """A loopback TLS server answering each connection with a handshake; yields its port."""
    _, cert, key = write_certificates(tmp_path, serial=1)
    tls = ReloadingContext(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with tls.context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield tls, listener.getsockname()[1], tmp_path
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def served_serial(port: int, ca: Path) -> int:
    client = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        client.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def test_a_rotated_certificate_is_served_on_the_next_handshake(
    tls_server: tuple[ReloadingContext, int, Path],
) -> None:
    _, port, directory = tls_server
    assert served_serial(port, directory / "ca.crt") == 1
    write_certificates(directory, serial=2)  # a new CA too: the old one no longer verifies it
    assert served_serial(port, directory / "ca.crt") == 2


def test_an_unreadable_rotation_keeps_the_last_good_certificate(
    tls_server: tuple[ReloadingContext, int, Path], caplog: pytest.LogCaptureFixture
) -> None:
    _, port, directory = tls_server
    (directory / "tls.crt").write_text("-----BEGIN CERTIFICATE-----\nhalf written")
    with caplog.at_level(logging.WARNING, logger="ztauthz.injector"):
        assert served_serial(port, directory / "ca.crt") == 1
    assert "TLS certificate not reloaded" in caplog.text


def test_a_missing_certificate_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ReloadingContext(tmp_path / "tls.crt", tmp_path / "tls.key")
