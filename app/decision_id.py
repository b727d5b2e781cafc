"""Decision ids: one random UUID4 per check, named in the answer, the log line and the span."""

from __future__ import annotations

import os
from collections import deque

# A random (version 4, RFC 9562 variant) UUID's bits, without building a uuid.UUID.
_UUID4_KEEP = ~(0xF000 << 64) & ~(0xC000 << 48)
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)
_IDS_PER_READ = 256
# Ready decision ids. os.urandom is read 4 KiB at a time: a read per check releases the GIL,
# and getting it back behind the decision-log writer cost more than the id itself.
_ids: deque[str] = deque()
os.register_at_fork(after_in_child=_ids.clear)  # a forked worker never repeats its parent's


def new_decision_id() -> str:
    """A random UUID4 in 32 hex digits, as ``uuid.uuid4().hex`` (from the same source)."""
    try:
        return _ids.popleft()  # atomic: no two callers get the same id
    except IndexError:
        pool = os.urandom(16 * _IDS_PER_READ)
        fresh = [
            f"{int.from_bytes(pool[at : at + 16]) & _UUID4_KEEP | _UUID4_SET:032x}"
            for at in range(0, len(pool), 16)
        ]
        _ids.extend(fresh[1:])
        return fresh[0]
