"""Why a SET was refused: the RFC 8935 §2.4 error codes (IANA "Security Event Token Error
Codes"), plus SSF's ``invalid_state`` (SSF §8.1.4.1, a verification event whose ``state`` is
not the one expected).

A refusal carries one code and a short description for the transmitter's operators. The
description names what was wrong (a claim, a header), never a value from the SET: the answer
goes back over the network and into logs.
"""

from __future__ import annotations

from enum import StrEnum


class SetErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"  # not a SET, or an event not as its definition says
    INVALID_KEY = "invalid_key"  # the signing key is unknown or the signature does not verify
    INVALID_ISSUER = "invalid_issuer"  # iss is not this stream's transmitter
    INVALID_AUDIENCE = "invalid_audience"  # aud does not name this receiver
    AUTHENTICATION_FAILED = "authentication_failed"  # the push request's credentials
    ACCESS_DENIED = "access_denied"  # the transmitter may not send this event or subject
    INVALID_STATE = "invalid_state"  # SSF: a verification event's state is not expected


class SetError(Exception):
    """A SET refused with ``code``; nothing was changed."""

    def __init__(self, code: SetErrorCode, description: str) -> None:
        super().__init__(f"{code.value}: {description}")
        self.code = code
        self.description = description


class SetUnavailable(Exception):
    """The SET cannot be decided now (no transmitter keys, the shared store is unreachable):
    answered 503 so that the transmitter delivers it again later."""


class DuplicateSet(SetError):
    """A SET whose ``jti`` was received before: refused on push (``invalid_request``),
    acknowledged on poll (its first delivery was applied)."""

    def __init__(self) -> None:
        super().__init__(SetErrorCode.INVALID_REQUEST, "this SET (jti) was received before")
