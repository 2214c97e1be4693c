"""What the replayed loop knows at each moment: who serves, the release under way, the ledger,
governance's accepted requests, open alerts, the counters and the decision log.

Versions are numbered in the order the loop registers them (``"1"`` is the first model), as the
registry numbers them; every candidate the loop trains is registered, whether or not it passes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from include.mlops.domain.policy import LedgerRow, Verdict

if TYPE_CHECKING:
    import numpy as np

    from include.mlops.steps.backtest.models import Fitted


@dataclass
class Release:
    """A candidate deployed next to (canary, shadow) or instead of (direct) the champion."""

    version: str
    mode: str  # canary | shadow | direct
    since: date  # first day of its traffic
    first_row: int
    passed: Verdict | None = None  # the early window's verdict once it passed
    extended: bool = False  # an inconclusive window was extended once (early_window.on_inconclusive)
    kept: bool = False  # an inconclusive window was left to a person (on_inconclusive: keep)


@dataclass
class Bake:
    """A promotion's bake period (``promotion.bake_days``): the previous champion scores every row in
    shadow until the labels of the period are in (``steps.bake``)."""

    promoted: str
    previous: str
    since: date  # first day served by the promoted version
    first_row: int


@dataclass
class LoopState:
    champion: str
    versions: dict[str, Fitted]
    #: Per history row: the version that answered it (0: not served yet) and the one scoring it in shadow.
    served: np.ndarray
    shadow: np.ndarray
    release: Release | None = None
    bake: Bake | None = None
    ledger: list[LedgerRow] = field(default_factory=list)
    requests: list[tuple[datetime, str]] = field(default_factory=list)
    open_alerts: set[str] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)
    decisions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def challenger(self) -> str | None:
        """Who holds the challenger alias: a canary or shadow release, or the previous champion baking in shadow."""
        if self.release is not None and self.release.mode != "direct":
            return self.release.version
        return self.bake.previous if self.bake is not None else None

    def register(self, fitted: Fitted) -> str:
        version = str(len(self.versions) + 1)
        self.versions[version] = fitted
        return version

    def record(self, at: datetime, kind: str, verdict: Verdict | str, reason_code: str = "", **details: Any) -> None:
        """One decision of the replayed loop, in event time (the backtest's decision log)."""
        if isinstance(verdict, Verdict):
            outcome, reason_code, reasons = verdict.outcome, verdict.reason_code, verdict.reasons
        else:
            outcome, reasons = verdict, []
        self.decisions.append(
            {"at": at.isoformat(), "kind": kind, "outcome": outcome, "reason_code": reason_code, "reasons": reasons[:3], **details}
        )

    def alert(self, key: str) -> None:
        """Raise an alert unless the same incident (dedupe key) is still open."""
        if key not in self.open_alerts:
            self.open_alerts.add(key)
            self.counts["alerts"] += 1

    def resolve(self, prefix: str) -> None:
        self.open_alerts = {k for k in self.open_alerts if not k.startswith(prefix)}
