"""Decision ids: random UUID4s in 32 hex digits, never repeated (also across a fork)."""

from __future__ import annotations

import os
import uuid
import warnings

from app.decision_id import new_decision_id


def test_decision_ids_are_distinct_uuid4s() -> None:
    ids = [new_decision_id() for _ in range(5_000)]  # several refills of the pool
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert value == parsed.hex


def test_a_forked_child_never_reuses_the_parents_pending_ids() -> None:
    new_decision_id()  # the parent now holds ready ids
    read, write = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a process with threads; the child only draws
        # ids and leaves with os._exit, touching no lock another thread could hold.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report its next ids and leave at once
        os.close(read)
        os.write(write, "".join(new_decision_id() for _ in range(8)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read().decode()
    os.waitpid(pid, 0)
    parent = "".join(new_decision_id() for _ in range(8))
    child_ids = {child[i : i + 32] for i in range(0, len(child), 32)}
    parent_ids = {parent[i : i + 32] for i in range(0, len(parent), 32)}
    assert len(child_ids) == 8
    assert not child_ids & parent_ids
