"""Country of an IP address from a MaxMind-format database (``maxminddb``), kept fresh.

The database is opened at start (a file that cannot be opened stops the start: the configuration
names it, so it must work). A background task checks the file every ``reload_interval``; when
its identity changed (modification time, size or inode: an in-place write or an atomic rename),
the new file is opened in a worker thread and swapped in on the event loop, so lookups on the
check path never wait for I/O and never see a half-open database. A file that fails to open
keeps the last good database (logged). Lookups read ``country.iso_code`` (GeoIP2/GeoLite2
Country and City layouts).

The reader memory-maps a private copy of the file (made, opened and unlinked in the worker
thread), never the configured file itself: rewriting that file in place would otherwise change
the pages under a live reader. Lookups stay in the C extension (about a microsecond).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import maxminddb
from maxminddb.reader import Reader

from app import tasks
from app.evidence.client_ip import IPAddress
from app.evidence.model import country_code

log = logging.getLogger("ztauthz.evidence.geoip")

_Signature = tuple[int, int, int]


class GeoIpError(Exception):
    """The database cannot be opened (the message names the file, never its contents)."""


def _signature(path: Path) -> _Signature:
    stat = os.stat(path)
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


def _open(path: Path) -> tuple[Reader, _Signature]:
    descriptor, private = tempfile.mkstemp(prefix="ztauthz-geoip-", suffix=".mmdb")
    os.close(descriptor)
    try:
        signature = _signature(path)
        shutil.copyfile(path, private)
        if _signature(path) != signature:
            raise GeoIpError(f"GeoIP database {path} changed while it was read; retrying later")
        reader = maxminddb.open_database(private, maxminddb.MODE_AUTO)
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        raise GeoIpError(f"cannot open GeoIP database {path}: {type(exc).__name__}") from None
    finally:
        os.unlink(private)  # the reader's memory map keeps the data
    return reader, signature


class GeoIp:
    """One GeoIP database file, reloaded when it changes."""

    def __init__(self, path: Path, reload_interval: float) -> None:
        self.path = path
        self._interval = max(0.01, reload_interval)
        self._reader, self._signature = _open(path)
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0  # successful reloads, for tests and logs
        self.failures = 0

    def country(self, address: IPAddress) -> str | None:
        """ISO 3166-1 alpha-2 country of ``address``, or None when the database has none."""
        try:
            record: Any = self._reader.get(address)
        except (ValueError, maxminddb.InvalidDatabaseError):
            # e.g. an IPv6 address in an IPv4-only database, or a closed reader: unknown
            return None
        if not isinstance(record, dict):
            return None
        country = record.get("country")
        return country_code(country.get("iso_code")) if isinstance(country, dict) else None

    async def reload_if_changed(self) -> bool:
        """Open the file again if it changed since it was loaded; True when swapped in."""
        try:
            current = await asyncio.to_thread(_signature, self.path)
        except OSError:
            self._failed("the file is gone")
            return False
        if current == self._signature:
            return False
        try:
            reader, signature = await asyncio.to_thread(_open, self.path)
        except GeoIpError as exc:
            self._failed(str(exc))
            return False
        old, self._reader, self._signature = self._reader, reader, signature
        old.close()  # on the event loop, so no lookup is using it
        self.reloads += 1
        log.info("reloaded GeoIP database %s", self.path)
        return True

    def _failed(self, why: str) -> None:
        self.failures += 1
        log.warning(
            "GeoIP database %s not reloaded (%s); keeping the last good one", self.path, why
        )

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name="geoip reload")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        await tasks.stop(task)
        self._reader.close()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.reload_if_changed()
            except Exception:  # never let the watcher die
                log.exception("GeoIP reload check failed")
