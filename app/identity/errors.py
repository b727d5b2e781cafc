"""The error raised by token verification; its reason is the decision's reason."""

from __future__ import annotations

from app.reasons import Reason


class TokenError(Exception):
    """A token was refused. ``reason`` is one of the token_* codes (or keys_unavailable).

    The message is for operators' logs; it never includes the token itself.
    """

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail
