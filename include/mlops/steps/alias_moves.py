"""Who moves the aliases once a promote-or-rollback (or bake) verdict is in, and how.

Every change passes ``expected``: the version the verdict was made on must still hold the alias
(compare-and-set, :func:`include.mlops.adapters.registry.set_alias`); the caller holds the model's
alias lock around the whole move and re-checks the aliases first (:func:`include.mlops.steps.release.act_final`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.mlops.adapters.registry import UNCHECKED
from include.mlops.domain.clock import utcnow
from include.mlops.domain.policy import Verdict
from include.mlops.domain.roles import CHALLENGER, CHAMPION, SHADOW

if TYPE_CHECKING:
    from include.mlops.adapters.alerts import Severity
    from include.mlops.runtime import Runtime


@dataclass(frozen=True)
class FinalMove:
    """Who moves the aliases for a promote-or-rollback verdict, and the ledger keys they move under."""

    rt: Runtime
    client: Any
    actor: str
    key: str
    why: str
    dag_id: str | None
    run_id: str | None

    def set(self, alias: str, version: str, *, strategy: str, op: str, action: str, expected: str | None = UNCHECKED) -> None:
        """Point ``alias`` at ``version`` if it is still held by ``expected``."""
        from include.mlops.adapters.registry import set_alias

        set_alias(
            self.rt.store,
            self.client,
            self.rt.model_name,
            alias,
            version,
            strategy=strategy,
            reason=self.why,
            actor=self.actor,
            op_key=f"{self.key}:{op}",
            dag_id=self.dag_id,
            run_id=self.run_id,
            action=action,
            expected=expected,
        )

    def remove(self, alias: str, *, reason: str, op: str, action: str, expected: str | None = UNCHECKED) -> None:
        """Remove ``alias`` if it is still held by ``expected``."""
        from include.mlops.adapters.registry import remove_alias

        remove_alias(
            self.rt.store,
            self.client,
            self.rt.model_name,
            alias,
            reason=reason,
            actor=self.actor,
            op_key=f"{self.key}:{op}",
            dag_id=self.dag_id,
            run_id=self.run_id,
            action=action,
            expected=expected,
        )

    def started(self) -> bool:
        """True when a change under this move's key is already in the ledger (a retried task)."""
        return any(r["op_key"] and r["op_key"].startswith(f"{self.key}:") for r in self.rt.store.list_ledger(self.rt.model_name))


def move_aliases(move: FinalMove, verdict: Verdict, inputs: dict[str, Any], text: str, result: dict[str, Any]) -> tuple[Severity, str]:
    """The registry side of a verdict (ledger rows + tags); fills ``result``, returns the alert's (severity, kind)."""
    champion, challenger = inputs.get("champion"), inputs.get("challenger")
    if verdict.outcome == "promote":
        target = inputs.get("requested_version") or challenger
        move.set(CHAMPION, str(target), strategy="promote", op=f"promote:{target}", action="promoted", expected=champion)
        bake_days = move.rt.spec.promotion.bake_days
        if bake_days > 0 and champion:
            from include.mlops.adapters.registry import set_challenger_mode

            # the previous champion stays as a shadow challenger for the bake period
            set_challenger_mode(move.client, move.rt.model_name, SHADOW, move.rt.spec.deployment.canary_share)
            move.set(CHALLENGER, str(champion), strategy=SHADOW, op=f"promote:{target}:bake", action="promoted", expected=challenger)
            result.update(bake={"promoted": str(target), "previous": str(champion), "since": utcnow().isoformat(), "days": bake_days})
        else:
            move.remove(
                CHALLENGER, reason=f"v{target} promoted to champion", op=f"promote:{target}:clear", action="promoted", expected=challenger
            )
        result.update(version=str(target), previous_champion=champion)
        return "info", "model_promoted"
    if verdict.outcome == "rollback":
        target = str(verdict.details["to"])
        move.set(CHAMPION, target, strategy="rollback", op=f"rollback:{target}", action="rolled_back", expected=champion)
        result.update(version=target, rolled_back_from=champion)
        return "warning", "model_rolled_back"
    if verdict.outcome == "refused" and verdict.reason_code in ("loses_on_production_labels", "gain_not_significant") and challenger:
        move.remove(CHALLENGER, reason=f"promotion refused: {text}", op=f"refuse:{challenger}", action="rolled_back", expected=challenger)
        result.update(version=challenger, challenger_removed=True)
        return "warning", "promotion_refused"
    return ("warning", "promotion_refused") if verdict.outcome == "refused" else ("info", "no_change")
