from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from app.dev.upstream import upstream_app
from tests.unit.dev.dev_helpers import DEV_CLI, running, serving

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"]


@pytest.mark.parametrize("method", METHODS)
def test_echoes_any_method_and_path(method: str) -> None:
    with serving(lambda _: upstream_app) as base:
        response = httpx.request(
            method,
            f"{base}/invoices/42/items?limit=5&x=%2F",
            headers={"X-Auth-Subject": "alice", "X-Auth-Groups": "finance"},
            content=b"0123456789" if method in ("POST", "PUT", "PATCH") else None,
        )
    assert response.status_code == 200
    echo = response.json()
    assert echo["method"] == method
    assert echo["path"] == "/invoices/42/items"
    assert echo["query"] == "limit=5&x=%2F"
    assert echo["headers"]["x-auth-subject"] == "alice"
    assert echo["headers"]["x-auth-groups"] == "finance"
    assert echo["headers"]["host"] == base.removeprefix("http://")
    assert echo["body_length"] == (10 if method in ("POST", "PUT", "PATCH") else 0)


def test_header_names_are_lower_cased_and_repeats_kept() -> None:
    headers = [("X-Auth-Subject", "mallory"), ("x-auth-subject", "alice"), ("X-Trace", "t1")]
    with serving(lambda _: upstream_app) as base:
        echo = httpx.get(f"{base}/", headers=headers).json()
    assert echo["path"] == "/"
    assert all(name == name.lower() for name in echo["headers"])
    assert echo["headers"]["x-auth-subject"] == "mallory, alice"
    assert ["x-auth-subject", "mallory"] in echo["header_list"]
    assert ["x-auth-subject", "alice"] in echo["header_list"]
    assert echo["headers"]["x-trace"] == "t1"


def test_raw_path_shows_encoding_the_path_hides() -> None:
    with serving(lambda _: upstream_app) as base:
        echo = httpx.get(f"{base}/a%2Fb/%2e%2e/c").json()
    assert echo["raw_path"] == "/a%2Fb/%2e%2e/c"
    assert echo["path"] == "/a/b/../c"


def test_dev_upstream_command(tmp_path: Path) -> None:
    with running([*DEV_CLI, "upstream", "--port", "0"], tmp_path) as upstream:
        echo = httpx.get(f"{upstream.url}/hello", headers={"x-auth-subject": "bob"}).json()
        code, err = upstream.stop()
    assert upstream.url.startswith("http://127.0.0.1:")
    assert (echo["path"], echo["headers"]["x-auth-subject"]) == ("/hello", "bob")
    assert code == 0
    assert "DEVELOPMENT ONLY" in err
