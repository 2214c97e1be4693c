"""Sticky canary routing: an entity always lands on the same side for a given share.

The bucket of an entity is a stable hash of its id (BLAKE2b, salted with the model name so two
models' canaries do not pick the same entities), mapped to [0, 1). An entity goes to the challenger
when its bucket is below the canary share, so raising the share only adds entities to the canary,
never moves one back. Python's ``hash()`` is not used: it is randomized per process, so the split
would differ between workers and restarts.

Pure, in the domain layer: the serving API routes live requests with it and the backtest
(:mod:`include.mlops.steps.backtest`) splits replayed traffic with the very same function.
"""

from __future__ import annotations

from hashlib import blake2b

__all__ = ["bucket", "goes_to_challenger"]

_SCALE = float(1 << 64)


def bucket(entity_id: str, salt: str = "") -> float:
    """Stable position of ``entity_id`` in [0, 1)."""
    digest = blake2b(entity_id.encode("utf-8"), digest_size=8, key=salt.encode("utf-8")[:64]).digest()
    return int.from_bytes(digest, "big") / _SCALE


def goes_to_challenger(entity_bucket: float, share: float) -> bool:
    """True when an entity in ``entity_bucket`` belongs to the canary at ``share`` (0: nobody, 1: everybody)."""
    return entity_bucket < share
