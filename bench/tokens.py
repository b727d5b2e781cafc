"""Pools of distinct, valid benchmark tokens, minted in parallel and kept one per line.

RS256 signing costs about 0.3 ms a token here, so a pool large enough that no token repeats
within a cold run takes a few seconds on both cores; it is minted before the runs that use
it, never while a run measures.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from app.dev.keys import DevKeys
from app.dev.stack_config import AUDIENCE
from app.dev.tokens import mint
from bench import policies

TTL = 840.0  # 14 minutes: valid for the whole run, within the issuer's 15 minute maximum


def _mint_batch(keys_dir: str, issuer: str, alg: str, count: int) -> list[str]:
    keys = DevKeys.load_or_create(Path(keys_dir))
    return [
        mint(
            keys,
            issuer=issuer,
            audience=AUDIENCE,
            subject=policies.SUBJECT,
            groups=list(policies.GROUPS),
            scopes=list(policies.SCOPES),
            alg=alg,
            ttl=TTL,
        )
        for _ in range(count)
    ]


def mint_many(keys_dir: Path, issuer: str, alg: str, count: int) -> list[str]:
    """``count`` distinct tokens (each has its own ``jti``), on every core."""
    workers = max(1, min(os.cpu_count() or 1, 4))
    if count < 200 or workers == 1:
        return _mint_batch(str(keys_dir), issuer, alg, count)
    share = -(-count // workers)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(_mint_batch, str(keys_dir), issuer, alg, min(share, count - i * share))
            for i in range(workers)
        ]
        return [token for future in futures for token in future.result()][:count]


class TokenPool:
    """A file of distinct tokens for wrk, and how far the runs have used it."""

    def __init__(self, path: Path, keys_dir: Path, issuer: str, alg: str) -> None:
        self.path = path
        self._keys_dir = keys_dir
        self._issuer = issuer
        self.alg = alg
        self.size = 0
        self.used = 0  # tokens already sent: the next run starts after them

    def ensure(self, unused: int) -> None:
        """Grow the pool until at least ``unused`` tokens are left for the next run."""
        missing = self.used + unused - self.size
        if missing <= 0:
            return
        fresh = mint_many(self._keys_dir, self._issuer, self.alg, missing)
        with self.path.open("a", encoding="ascii") as out:
            out.write("".join(token + "\n" for token in fresh))
        self.size += len(fresh)

    def advance(self, sent: int) -> None:
        self.used += sent
