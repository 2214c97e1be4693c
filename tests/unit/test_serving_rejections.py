"""Rejected requests are judged per version (issue 17): the serving API logs a rejected row against
the version its entity id routes to, a request rejected before routing (no entity id) against no
version, and the early window's rejected share counts only the judged version's own requests, so
junk traffic cannot push a canary over the limit. On the test backend's ops store."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from include.mlops.adapters.registry import ServingConfig
from include.mlops.domain.roles import CHALLENGER, CHAMPION
from include.mlops.serving.routing import bucket, goes_to_challenger
from include.mlops.steps import release
from include.mlops.steps.release import Release

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, 12)


def rec(request_id: str, version: str | None, route: str, status: str, entity: str | None = "e", minute: int = 1) -> dict:
    return {
        "request_id": request_id,
        "entity_id": entity,
        "model_name": "m",
        "model_version": version,
        "route": route,
        "event_time": None,
        "features": None,
        "score": 0.3 if status == "ok" else None,
        "prediction": 0 if status == "ok" else None,
        "latency_ms": 3.0,
        "status": status,
        "error": None if status == "ok" else "bad",
        "created_at": T0 + timedelta(minutes=minute),
    }


def test_the_rejected_share_of_a_canary_counts_only_its_own_requests(runtime):
    rt = runtime
    records = [rec(f"ok-c{i}", "2", CHALLENGER, "ok") for i in range(40)]
    records += [rec("rej-c0", "2", CHALLENGER, "rejected")]  # the canary's own rejection
    records += [rec(f"ok-p{i}", "1", CHAMPION, "ok") for i in range(160)]
    records += [rec(f"junk-p{i}", "1", CHAMPION, "rejected") for i in range(300)]  # junk routed to the champion
    records += [rec(f"junk-n{i}", None, CHAMPION, "rejected", entity=None) for i in range(500)]  # never routed
    records += [rec("old", "2", CHALLENGER, "rejected", minute=-10)]  # before the deployment
    rt.store.append_inference(records)
    canary = Release("m", "2", "canary", T0.isoformat(), "1")
    assert release._rejected_share(rt, canary) == pytest.approx(1 / 41)
    direct = Release("m", "1", "direct", T0.isoformat(), None)
    assert release._rejected_share(rt, direct) == pytest.approx(300 / 460)  # the unattributable 500 count for nobody
    shadow = Release("m", "3", "shadow", T0.isoformat(), "1")
    assert release._rejected_share(rt, shadow) is None  # no traffic of its own: not measured


def test_the_serving_api_logs_rejections_against_the_routed_version_or_none(spec, tmp_path, monkeypatch):
    """A row with an entity id: the version it routes to (canary hash); a body with none: no version."""
    import include.mlops.serving.models as models_mod
    from include.mlops.serving.schema import FieldError, RequestRejected
    from include.mlops.serving.service import ServingService
    from include.mlops.settings import get_settings
    from tests.integration.serving_fixtures import train_tiny

    model, _ = train_tiny(spec, rows=120, max_iter=3)
    monkeypatch.setattr(models_mod, "load_sklearn", lambda name, version: model)
    settings = get_settings({"MLOPS_HOME": str(tmp_path), "MLOPS_SERVING_JOURNAL": "off", "MLOPS_MODEL_NAME": "m"})
    service = ServingService(settings, spec, config=lambda: ServingConfig("1", "2", "canary", 0.5))
    service.manager.poll()
    logged: list[dict] = []
    service._log = logged.extend  # type: ignore[method-assign]
    to_canary = next(f"c{i}" for i in range(1000) if goes_to_challenger(bucket(f"c{i}", "m"), 0.5))
    to_champion = next(f"p{i}" for i in range(1000) if not goes_to_challenger(bucket(f"p{i}", "m"), 0.5))
    errors = [FieldError(0, "distance", "must be a number")]
    service._rejected(RequestRejected(422, errors, [to_canary, to_champion]), 0.0, T0)
    service._rejected(RequestRejected(400, [FieldError(None, None, "body is not valid JSON")]), 0.0, T0)
    assert [(r["entity_id"], r["model_version"], r["route"]) for r in logged] == [
        (to_canary, "2", CHALLENGER),
        (to_champion, "1", CHAMPION),
        (None, None, CHAMPION),
    ]
