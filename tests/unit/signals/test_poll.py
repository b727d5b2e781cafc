"""RFC 8936 poll delivery (app/signals/poll.py) against a transmitter's poll endpoint: accepted
SETs and duplicates acknowledged, refused ones reported in setErrs with their RFC 8935 code,
undecidable ones left for the next poll; the bearer token sent; failures reported."""

from __future__ import annotations

import json
from typing import Any, cast

import httpx
import pytest

from app.settings.signals import PollSettings
from app.signals.errors import DuplicateSet, SetError, SetErrorCode, SetUnavailable
from app.signals.intake import Intake
from app.signals.poll import Poller, PollError

TOKEN = "poll-token-0123456789"


class FakeIntake:
    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes, str]] = []

    async def accept(self, name: str, raw: bytes, delivery: str) -> None:
        self.seen.append((name, raw, delivery))
        outcome = raw.decode()
        if outcome == "bad":
            raise SetError(SetErrorCode.INVALID_KEY, "the signature does not verify")
        if outcome == "again":
            raise DuplicateSet()
        if outcome == "later":
            raise SetUnavailable("no keys")


def poller(handler: Any) -> tuple[Poller, FakeIntake]:
    intake = FakeIntake()
    settings = PollSettings.model_validate(
        {"endpoint": "https://tx.example.com/poll", "token": TOKEN}
    )
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return Poller("idp", settings, cast(Intake, intake), client), intake


async def test_outcomes_are_reported_on_the_next_poll() -> None:
    requests: list[dict[str, Any]] = []
    answers = iter(
        [
            {
                "sets": {"j1": "good", "j2": "bad", "j3": "again", "j4": "later"},
                "moreAvailable": False,
            },
            {"sets": {}, "moreAvailable": False},
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        requests.append(json.loads(request.content))
        return httpx.Response(200, json=next(answers))

    poll, intake = poller(handler)
    assert await poll.poll_once() is True  # outcomes wait to be reported
    assert [raw for _, raw, _ in intake.seen] == [b"good", b"bad", b"again", b"later"]
    assert all(delivery == "poll" for _, _, delivery in intake.seen)
    assert await poll.poll_once() is False
    assert requests[0] == {"maxEvents": 50, "returnImmediately": True}
    assert sorted(requests[1]["ack"]) == ["j1", "j3"]
    assert requests[1]["setErrs"] == {
        "j2": {"err": "invalid_key", "description": "the signature does not verify"}
    }


@pytest.mark.parametrize(
    "response",
    [httpx.Response(401), httpx.Response(200, content=b"not json"), httpx.Response(200, json=[1])],
)
async def test_a_failed_poll_is_an_error(response: httpx.Response) -> None:
    poll, intake = poller(lambda request: response)
    with pytest.raises(PollError):
        await poll.poll_once()
    assert intake.seen == []
