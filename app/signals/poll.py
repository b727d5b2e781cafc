"""Poll delivery, RFC 8936: for transmitters that keep SETs until the receiver fetches them.

Each poll is ``POST <endpoint>`` with ``Authorization: Bearer <poll token>`` and the JSON body
of RFC 8936 §2.1: ``maxEvents``, ``returnImmediately: true``, and the outcome of the SETs the
previous answer carried: ``ack`` (accepted, or already received: a duplicate ``jti`` was
applied the first time) and ``setErrs`` (refused, with the RFC 8935 §2.4 code and a
description, RFC 8936 §2.4.4). A SET that cannot be decided now (no keys, no store) is neither
acknowledged nor refused: the transmitter offers it again. The answer's ``sets`` (jti -> SET)
go through the same intake as pushed SETs (app/signals/intake.py).

Polls follow each other at once while the transmitter says ``moreAvailable`` or an outcome
waits to be reported, else every ``interval``; failures back off exponentially up to the
interval. Every replica polls: each SET is accepted once (its ``jti`` is claimed in the
shared store) and shared through the store like a pushed one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from app import tasks
from app.identity.discovery import safe_url
from app.settings.signals import PollSettings
from app.signals.credentials import SecretUnavailable, read_secret
from app.signals.errors import DuplicateSet, SetError, SetUnavailable
from app.signals.intake import Intake

log = logging.getLogger("ztauthz.signals")
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


class PollError(Exception):
    pass


class Poller:
    def __init__(
        self, name: str, settings: PollSettings, intake: Intake, client: httpx.AsyncClient
    ):
        self.name = name
        self._settings = settings
        self._intake = intake
        self._client = client
        self._ack: list[str] = []
        self._errors: dict[str, dict[str, str]] = {}
        self._task: asyncio.Task[None] | None = None
        self.polls = 0
        self.last_error: str | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"signals poll {self.name}")

    async def aclose(self) -> None:
        await tasks.stop(self._task)
        self._task = None

    async def poll_once(self) -> bool:
        """One poll; True when the transmitter has more (or outcomes wait to be reported)."""
        body: dict[str, Any] = {
            "maxEvents": self._settings.max_events,
            "returnImmediately": True,
        }
        if self._ack:
            body["ack"] = list(self._ack)
        if self._errors:
            body["setErrs"] = dict(self._errors)
        answer = await self._post(body)
        self.polls += 1
        self._ack, self._errors = [], {}  # reported
        sets = answer.get("sets", {})
        if not isinstance(sets, dict):
            raise PollError("the answer's 'sets' is not an object")
        for jti, token in sets.items():
            if not isinstance(token, str):
                self._errors[str(jti)] = {"err": "invalid_request", "description": "not a SET"}
                continue
            try:
                await self._intake.accept(self.name, token.encode("utf-8", "replace"), "poll")
            except DuplicateSet:
                self._ack.append(str(jti))
            except SetError as exc:
                self._errors[str(jti)] = {"err": exc.code.value, "description": exc.description}
            except SetUnavailable:
                continue  # offered again later
            else:
                self._ack.append(str(jti))
        more = answer.get("moreAvailable") is True
        return more or bool(self._ack or self._errors)

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        settings = self._settings
        try:
            token = read_secret(settings).decode()
        except SecretUnavailable as exc:
            raise PollError(str(exc)) from None
        timeout = settings.timeout.total_seconds()
        where = safe_url(settings.endpoint)
        try:
            async with asyncio.timeout(timeout):
                response = await self._client.post(
                    settings.endpoint,
                    json=body,
                    headers={"authorization": f"Bearer {token}", "accept": "application/json"},
                    timeout=timeout,
                    follow_redirects=False,
                )
        except (httpx.HTTPError, TimeoutError) as exc:
            raise PollError(f"{where}: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise PollError(f"{where}: HTTP {response.status_code}, expected 200")
        if len(response.content) > MAX_RESPONSE_BYTES:
            raise PollError(f"{where}: answer larger than {MAX_RESPONSE_BYTES} bytes")
        try:
            answer = response.json()
        except ValueError:
            raise PollError(f"{where}: the answer is not JSON") from None
        if not isinstance(answer, dict):
            raise PollError(f"{where}: the answer is not a JSON object")
        return answer

    async def _run(self) -> None:
        interval = self._settings.interval.total_seconds()
        delay = min(1.0, interval)
        while True:
            try:
                more = await self.poll_once()
                self.last_error = None
                delay = min(1.0, interval)
                if more:
                    continue
                await asyncio.sleep(interval)
            except PollError as exc:
                self.last_error = str(exc)
                log.warning("signals: polling %s failed: %s", self.name, exc)
                await asyncio.sleep(delay)
                delay = min(interval, delay * 2)
            except Exception:
                log.exception("signals: polling %s failed unexpectedly", self.name)
                await asyncio.sleep(interval)
