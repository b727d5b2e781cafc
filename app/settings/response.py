"""What a denial tells the client."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from app.settings.base import Model

_REALM = re.compile(r"[ !#-\[\]-~]+")


class Response(Model):
    """What denials tell the client. Reason codes are always given; rule ids only on request."""

    include_rule: bool = False
    # Written into WWW-Authenticate as realm="...": visible ASCII and spaces, no quote or
    # backslash (nothing that could end the quoted string or the header).
    realm: str = Field(default="ztauthz", min_length=1, max_length=256)

    @field_validator("realm")
    @classmethod
    def _quotable(cls, realm: str) -> str:
        if not _REALM.fullmatch(realm):
            raise ValueError("must be visible ASCII or spaces, without '\"' or '\\'")
        return realm
