"""The bake period after a promotion, as a pure decision: the promoted version against the previous
champion scoring beside it in shadow, on the labels of the requests served since the promotion.

The step (:mod:`include.mlops.steps.bake`) gathers the inputs; nothing here reads a clock, a database
or the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from include.mlops.domain.policy import Verdict

if TYPE_CHECKING:
    from include.mlops.domain.significance import PairedComparison


@dataclass(frozen=True)
class BakeState:
    """A bake period: the promoted version, the previous champion scoring beside it in shadow, and
    what the labels of the requests served since the promotion say."""

    promoted: str  # the version promoted (baking as champion)
    previous: str  # the champion before it (in shadow)
    champion: str | None  # the aliases now
    challenger: str | None
    labelled_rows: int
    #: Event time covered by those labels since the promotion (first to last labelled request).
    covered: timedelta
    #: The previous champion as "challenger" against the promoted one on the same labelled rows.
    comparison: PairedComparison | None = None


def decide_bake(s: BakeState, *, bake: timedelta, min_rows: int) -> Verdict:
    """The end of a bake period, judged once, when the labels cover it (no peeking: a test repeated
    as labels arrive would roll back good versions by chance).

    ``noop`` when a person or a new deployment moved the aliases meanwhile; ``wait`` until the labels
    cover ``bake``; then ``rollback`` when the previous champion is significantly better on the same
    labelled requests, else ``end`` (the shadow is removed), also when too few labels arrived.
    """
    details: dict[str, Any] = {
        "promoted": s.promoted,
        "previous": s.previous,
        "labelled_rows": s.labelled_rows,
        "covered_hours": round(s.covered.total_seconds() / 3600, 2),
    }
    if s.champion != s.promoted or s.challenger != s.previous:
        return Verdict(
            "noop",
            "bake_superseded",
            [f"the aliases moved during the bake of v{s.promoted} (champion v{s.champion}, challenger v{s.challenger})"],
            details,
        )
    if s.covered < bake:
        return Verdict("wait", "baking", [f"labels cover {s.covered} of the {bake} bake period"], details)
    if s.labelled_rows < min_rows or s.comparison is None:
        return Verdict(
            "end",
            "bake_without_enough_labels",
            [f"{s.labelled_rows} labelled requests in the bake period of v{s.promoted} (< {min_rows}): kept without a verdict"],
            details,
        )
    c = s.comparison
    details["test"] = c.to_dict()
    text = (
        f"{c.metric} {c.champion:.4f} for v{s.promoted} vs {c.challenger:.4f} for the previous champion v{s.previous} "
        f"on {c.rows} labelled requests of the bake period (difference {c.difference:+.4f}, p {c.p_value_gain:.3g}, {c.method})"
    )
    if c.significant:
        return Verdict("rollback", "worse_than_previous_champion", [text], {**details, "to": s.previous})
    return Verdict("end", "bake_passed", [text], details)
