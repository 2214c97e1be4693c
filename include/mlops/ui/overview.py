"""The overview of every model of the deployment: one row per model (who serves, what state it is in,
its open alerts, its latest realized figure in its own metric, links to its page and its DAGs), and
the spec files the catalog left out, with why.

Each row reads the ops store filtered by its model (and the model's latest monitoring summary);
nothing here calls MLflow, so a deployment with many models still opens fast. A model whose rows
cannot be read gets a row that says why, never a broken overview.
"""

from __future__ import annotations

import html
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from include.mlops.catalog import ModelEntry, load_catalog
from include.mlops.domain.clock import utcnow
from include.mlops.domain.roles import CHALLENGER, CHAMPION
from include.mlops.runtime import load_runtime
from include.mlops.settings import Settings, get_settings
from include.mlops.ui import urls
from include.mlops.ui.status_page import REGRESSION, Status, champion_windows, document, higher_better, render_body, serving_health

if TYPE_CHECKING:
    from include.mlops.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass
class ModelRow:
    """One model on the overview."""

    name: str
    task: str
    #: the metric of the model's realized figures (``spec.promotion.metric``: what monitoring measures)
    metric: str
    default: bool
    route: str
    landing: str
    champion: str | None = None
    challenger: str | None = None
    #: the challenger's deployment strategy (canary, shadow) as the ledger recorded it
    challenger_strategy: str | None = None
    state: str = ""
    #: ok | warn | bad | muted: the state's colour
    state_class: str = "muted"
    open_alerts: int = 0
    critical_alerts: int = 0
    #: the latest champion window's realized quality: metric, value, labelled_rows, window_start, version, revised
    quality: dict[str, Any] | None = None
    last_decision: dict[str, Any] | None = None
    links: dict[str, str] = field(default_factory=dict)
    #: why this model's rows could not be read (the rest of the row is then empty)
    error: str | None = None


@dataclass
class Overview:
    generated_at: datetime
    models: list[ModelRow]
    #: spec file -> why the catalog left it out
    errors: dict[str, str]
    serving: dict[str, Any] | None = None
    links: dict[str, str] = field(default_factory=dict)


def model_state(champion: dict[str, Any] | None, challenger: dict[str, Any] | None, alerts: list[dict[str, Any]]) -> tuple[str, str]:
    """The model's state in a few words, and its colour: a critical alert first, then a rollout under
    way, then any other open alert, else who serves."""
    critical = sum(a["severity"] == "critical" for a in alerts)
    if critical:
        return f"{critical} critical alert{'s' if critical > 1 else ''}", "bad"
    if champion is None or not champion.get("to_version"):
        return "no champion yet", "muted"
    if challenger is not None and challenger.get("to_version"):
        return f"{challenger.get('strategy') or 'challenger'} of v{challenger['to_version']}", "warn"
    if alerts:
        return f"{len(alerts)} open alert{'s' if len(alerts) > 1 else ''}", "warn"
    return f"serving v{champion['to_version']}", "ok"


def _latest_quality(rt: Runtime, decisions: list[dict[str, Any]]) -> dict[str, Any] | None:
    windows = champion_windows(rt, decisions, limit=1)
    if not windows:
        return None
    w = windows[-1]
    q = w.get("quality") or {}
    live = q.get("live")
    return {
        "metric": q.get("metric") or rt.spec.promotion.metric,
        "value": live if isinstance(live, float) else None,
        "labelled_rows": q.get("labelled_rows"),
        "window_start": w.get("window_start"),
        "version": w.get("version"),
        "revised": bool(q.get("revised")),
    }


def _row(entry: ModelEntry, s: Settings) -> ModelRow:
    return ModelRow(
        name=entry.name,
        task=entry.spec.task,
        metric=entry.spec.promotion.metric,
        default=entry.default,
        route=entry.route,
        landing=str(entry.landing(s.lake)),
        links={
            "page": urls.model_page(entry.name),
            "json": urls.model_json(entry.name),
            "dags": urls.model_dags(s.airflow_url, entry.name),
            "mlflow_model": f"{s.mlflow_url}/#/models/{quote(entry.name)}",
        },
    )


def model_row(rt: Runtime, entry: ModelEntry) -> ModelRow:
    """The overview row of one model, from the ops store rows of that model."""
    store, model = rt.store, rt.model_name
    row = _row(entry, rt.settings)
    champion, challenger = store.alias_holder(model, CHAMPION), store.alias_holder(model, CHALLENGER)
    alerts = [a for a in store.list_alerts(model) if a["status"] == "open"]
    decisions = store.list_decisions(model)
    row.state, row.state_class = model_state(champion, challenger, alerts)
    row.champion = str(champion["to_version"]) if champion and champion.get("to_version") else None
    row.challenger = str(challenger["to_version"]) if challenger and challenger.get("to_version") else None
    row.challenger_strategy = (challenger or {}).get("strategy")
    row.open_alerts = len(alerts)
    row.critical_alerts = sum(a["severity"] == "critical" for a in alerts)
    row.quality = _latest_quality(rt, decisions)
    if decisions:
        d = decisions[-1]
        row.last_decision = {k: d.get(k) for k in ("kind", "outcome", "reason_code", "subject", "created_at", "dag_id", "run_id")}
    return row


def gather_overview(settings: Settings | None = None, *, health: bool = True) -> Overview:
    """Every model of the deployment (the default one first) and the specs left out; ``health``:
    ask the serving API's ``/health`` too (the home page passes on the default model's answer)."""
    s = settings or get_settings()
    catalog = load_catalog(s)
    rows = []
    for entry in catalog.models:
        try:
            rows.append(model_row(load_runtime(s, entry.name), entry))
        except Exception as exc:  # one model's unreadable state must not hide the others
            log.warning("overview: model %s unreadable: %s", entry.name, exc, exc_info=True)
            row = _row(entry, s)
            row.error = f"{type(exc).__name__}: {exc}"
            rows.append(row)
    return Overview(
        generated_at=utcnow(),
        models=rows,
        errors=dict(catalog.errors),
        serving=serving_health(s.serving_url) if health else None,
        links={"airflow": s.airflow_url, "evidently": s.evidently_url, "json": urls.overview_json()},
    )


def find_model(name: str, settings: Settings | None = None) -> ModelEntry | None:
    """The deployment's model called ``name``, or None (the page answers 404)."""
    catalog = load_catalog(settings or get_settings())
    return next((m for m in catalog.models if m.name == name), None)


# -- rendering ----------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _version(row: ModelRow, version: str | None, extra: str = "") -> str:
    if not version:
        return "<span class=muted>&ndash;</span>"
    href = f"{row.links['mlflow_model']}/versions/{quote(version)}"
    return f'<a href="{_e(href)}" target="_blank">v{_e(version)}</a>{_e(extra)}'


def _figure(row: ModelRow) -> str:
    q = row.quality
    if q is None:
        return "<span class=muted>no window judged yet</span>"
    metric = str(q.get("metric") or row.metric)
    value = q.get("value")
    shown = f"{value:.4f}" if isinstance(value, float) else "&ndash;"
    way = "higher" if higher_better(metric) else "lower"
    note = f"window {str(q.get('window_start') or '')[:10]}, v{q.get('version')}"
    if isinstance(q.get("labelled_rows"), int):
        note += f", {q['labelled_rows']} labelled{' (revised)' if q.get('revised') else ''}"
    return f"{_e(metric)} <b>{shown}</b> <span class=small title='{way} is better'>({_e(note)})</span>"


def _model_cells(row: ModelRow) -> str:
    kind = "regression" if row.task == REGRESSION else "binary classification"
    default = " <span class='b muted'>default</span>" if row.default else ""
    name = f'<a href="{_e(row.links["page"])}"><b>{_e(row.name)}</b></a>{default}'
    links = (
        f'<a href="{_e(row.links["page"])}">page</a> &middot; '
        f'<a href="{_e(row.links["dags"])}" target="_top">DAGs</a> &middot; '
        f'<a href="{_e(row.links["mlflow_model"])}" target="_blank">MLflow</a>'
    )
    route = f"<br><span class=small><code>POST {'/predict' if row.default else _e(row.route)}</code></span>"
    if row.error:
        return (
            f"<tr><td>{name}{route}</td><td>{_e(kind)}<br><span class=small>{_e(row.metric)}</span></td>"
            f"<td colspan=6><span class='b bad'>unreadable</span> <span class=small>{_e(row.error[:300])}</span></td><td>{links}</td></tr>"
        )
    d = row.last_decision
    last = (
        f"{_e(d['kind'])} <span class='b {'ok' if d['outcome'] in OK_OUTCOMES else 'muted'}'>{_e(d['outcome'])}</span>"
        f"<br><span class=small>{_e(str(d['created_at'])[:19])}</span>"
        if d
        else "<span class=muted>none yet</span>"
    )
    alerts = f"<span class=sev-critical>{row.open_alerts}</span>" if row.critical_alerts else str(row.open_alerts)
    return (
        f"<tr><td>{name}{route}</td><td>{_e(kind)}<br><span class=small>{_e(row.metric)}</span></td>"
        f"<td>{_version(row, row.champion)}</td>"
        f"<td>{_version(row, row.challenger, f' ({row.challenger_strategy})' if row.challenger and row.challenger_strategy else '')}</td>"
        f"<td><span class='b {row.state_class}'>{_e(row.state)}</span></td><td>{alerts}</td>"
        f"<td>{_figure(row)}</td><td>{last}</td><td>{links}</td></tr>"
    )


OK_OUTCOMES = {"accepted", "deployed", "passed", "healthy", "registered", "promote", "promoted"}
HEADERS = ["model", "task", "champion", "challenger", "state", "open alerts", "latest realized quality", "last decision", "links"]


def render_overview_body(ov: Overview) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in HEADERS)
    rows = "".join(_model_cells(r) for r in ov.models)
    health = ov.serving or {}
    live = (
        f"<span class='b bad'>serving API {_e(health['error'])}</span>" if "error" in health else "<span class='b ok'>serving API up</span>"
    )
    left_out = ""
    if ov.errors:
        items = "".join(f"<tr><td><code>{_e(path)}</code></td><td class='small pre'>{_e(why)}</td></tr>" for path, why in ov.errors.items())
        left_out = (
            "<h2>Specs left out</h2><p class=small>These spec files did not load; their models have no DAGs, route or page "
            f"until the file is fixed.</p><table><tr><th>spec file</th><th>why</th></tr>{items}</table>"
        )
    counts = f"{len(ov.models)} model{'s' if len(ov.models) != 1 else ''}"
    if ov.errors:
        counts += f", {len(ov.errors)} spec{'s' if len(ov.errors) != 1 else ''} left out"
    return f"""<h1>MLOps loop: all models</h1>
<p class=small>generated {_e(ov.generated_at.strftime("%Y-%m-%d %H:%M:%S"))} UTC &middot; refreshes every 30 s &middot;
{counts} &middot; {live} &middot;
<a href="{_e(ov.links.get("evidently", ""))}" target="_blank">Evidently dashboards</a> &middot;
<a href="{_e(ov.links.get("json", ""))}" target="_blank">JSON</a></p>
<table><tr>{head}</tr>{rows}</table>{left_out}"""


def render_overview(ov: Overview) -> str:
    return document("MLOps loop: all models", render_overview_body(ov))


def render_home(ov: Overview, default: Status) -> str:
    """``/mlops-loop/``: the overview, then the default model's page (what the address always showed)."""
    return document("MLOps loop", f"{render_overview_body(ov)}\n<hr>\n{render_body(default)}")


def overview_json(ov: Overview) -> dict[str, Any]:
    out = asdict(ov)
    out["generated_at"] = ov.generated_at.isoformat()
    for row in out["models"]:
        if row["last_decision"] and isinstance(row["last_decision"].get("created_at"), datetime):
            row["last_decision"]["created_at"] = row["last_decision"]["created_at"].isoformat()
    return out
