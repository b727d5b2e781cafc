"""A TLS server context that follows its certificate files.

cert-manager (or any rotation) replaces the mounted certificate and key in place; a webhook that
read them once would serve an expired certificate after the rotation and, with failure policy
``Fail``, block every opted-in pod. Each TLS handshake checks the files' change stamps (one
``stat`` each) and, when they changed, loads the new pair for that and later handshakes. A pair
that does not load (say, caught half-written) is logged and the last good pair is kept.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from pathlib import Path

log = logging.getLogger("ztauthz.injector")

_Stamp = tuple[int, int, int, int]


def _context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=cert, keyfile=key)
    return context


class ReloadingContext:
    """Owns the server SSLContext handed to the listener; swaps the certificate on change."""

    def __init__(self, cert: Path, key: Path) -> None:
        self._cert = cert
        self._key = key
        self._lock = threading.Lock()
        self._stamp = self._read_stamp()
        self._current = _context(cert, key)  # the first load must succeed: fail at start
        self.context = _context(cert, key)
        self.context.sni_callback = self._on_client_hello  # called with or without SNI

    def _read_stamp(self) -> _Stamp:
        cert, key = os.stat(self._cert), os.stat(self._key)
        return (cert.st_mtime_ns, cert.st_size, key.st_mtime_ns, key.st_size)

    def current(self) -> ssl.SSLContext:
        """The context for the next handshake, reloaded first if the files changed."""
        with self._lock:
            try:
                stamp = self._read_stamp()
                if stamp != self._stamp:
                    self._current = _context(self._cert, self._key)
                    self._stamp = stamp
                    log.info("TLS certificate reloaded from %s", self._cert)
            except (OSError, ssl.SSLError) as exc:
                log.warning("TLS certificate not reloaded (keeping the previous one): %s", exc)
            return self._current

    def _on_client_hello(
        self, sock: ssl.SSLObject | ssl.SSLSocket, _server_name: str | None, _: ssl.SSLContext
    ) -> None:
        sock.context = self.current()
