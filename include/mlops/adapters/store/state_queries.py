"""Governance state: small JSON values the loop keeps per model (the inference export's high-water
mark, the retrain requests)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select

from include.mlops.adapters.store.base import StoreBase
from include.mlops.adapters.store.schema import governance_state, utcnow


class StateQueries(StoreBase):
    def get_state(self, model: str, key: str, default: Any = None) -> Any:
        """The value stored under ``key`` for ``model``, or ``default``."""
        q = select(governance_state.c.value).where(governance_state.c.model_name == model, governance_state.c.key == key)
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        return row[0] if row else default

    def set_state(self, model: str, key: str, value: Any) -> None:
        """Replace the value under ``key`` for ``model``."""
        with self.begin() as conn:
            conn.execute(delete(governance_state).where(governance_state.c.model_name == model, governance_state.c.key == key))
            conn.execute(insert(governance_state).values(model_name=model, key=key, value=value, updated_at=utcnow()))
