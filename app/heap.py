"""Keeping Python's cyclic garbage collector off what lives as long as the policies.

CPython's collector scans every container object it tracks when it runs a full collection,
and it runs one by itself whenever enough new long-lived objects have piled up: under a stream
of new tokens (each verified one is cached) that is every few seconds. With 10,000 rules
loaded such a collection stops the event loop for about 100 ms, every check waiting behind it.
Nearly all of those objects (modules, settings, compiled policies, keys) never become garbage.

``settle`` runs one full collection, then moves everything that survived out of the
collector's sight (``gc.freeze``): later collections scan only what checks allocate. It runs
when the service starts and after every policy reload, so freshly compiled policies are
moved out of sight too. Frozen objects are still freed as soon as their last reference goes
(reference counting is untouched); only a reference cycle among them waits, for the next
``settle``, which unfreezes everything first: nothing is kept longer than one reload.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Settled:
    """What one ``settle`` did."""

    frozen: int  # objects the collector no longer scans
    collected: int  # unreachable objects the full collection found
    seconds: float  # how long it held the interpreter (every thread waits meanwhile)


def settle(clock: Callable[[], float] = time.perf_counter) -> Settled:
    """One full collection of everything (frozen objects included), then freeze the
    survivors. Holds the interpreter for the length of one full collection."""
    started = clock()
    gc.unfreeze()
    collected = gc.collect()
    gc.freeze()
    return Settled(frozen=gc.get_freeze_count(), collected=collected, seconds=clock() - started)
