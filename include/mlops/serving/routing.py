"""Sticky canary routing for the serving API: the split itself is pure and lives in the domain
layer (:mod:`include.mlops.domain.routing`, shared with the backtest); re-exported here with the
route names (:mod:`include.mlops.domain.roles`) the serving modules import."""

from __future__ import annotations

from include.mlops.domain.roles import CHALLENGER, CHAMPION, SHADOW
from include.mlops.domain.routing import bucket, goes_to_challenger

__all__ = ["CHALLENGER", "CHAMPION", "SHADOW", "bucket", "goes_to_challenger"]
