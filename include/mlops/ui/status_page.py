"""One model's status page: one server-rendered page that tells, at a glance, who serves, what the
loop decided and why, and what is wrong right now.

:func:`gather` reads the ops store (every query filtered by the model), the monitoring summaries,
MLflow's aliases and the serving API's ``/health``; :func:`render` turns that into HTML. Figures are
in the model's own metric: ``spec.promotion.metric``, which monitoring's realized quality and the
realized value use (ROC AUC for the flights classifier, e.g. MAE for a regression model; a stored
figure that names its metric is shown in that one). What only a classifier has (the CBPE estimate)
says "not applicable" for a regression model. The overview of every model is :mod:`.overview`; the
Airflow plugin (``plugins/mlops_loop.py``) mounts both behind Airflow's authentication; nothing
here imports Airflow.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from include.mlops.domain.clock import utcnow
from include.mlops.domain.roles import CANARY, CHALLENGER, CHAMPION
from include.mlops.domain.tasks import METRICS
from include.mlops.ui import urls

if TYPE_CHECKING:
    from include.mlops.runtime import Runtime

log = logging.getLogger(__name__)

PREFIX = urls.PREFIX
WINDOWS_SHOWN = 12
REGRESSION = "regression"


@dataclass
class Status:
    model: str
    generated_at: datetime
    champion: dict[str, Any] | None
    challenger: dict[str, Any] | None
    serving: dict[str, Any] | None
    ledger: list[dict[str, Any]]
    decisions: list[dict[str, Any]]
    quarantine: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    windows: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    #: The loop's realized value per month (``steps.value``, stored by the monitoring pass), or None.
    value: dict[str, Any] | None = None
    #: the spec's ``task`` and the metric its realized figures are in (``promotion.metric``)
    task: str = "binary_classification"
    metric: str = "roc_auc"
    #: the deployment's default model (unprefixed DAG ids, ``POST /predict``)
    default: bool = True


def serving_health(url: str) -> dict[str, Any] | None:
    import httpx

    try:
        resp = httpx.get(f"{url}/health", timeout=2.0)
        return dict(resp.json()) if resp.status_code == 200 else {"error": f"HTTP {resp.status_code}"}
    except (httpx.HTTPError, ValueError) as exc:
        return {"error": f"unreachable ({type(exc).__name__})"}


def champion_windows(rt: Runtime, decisions: list[dict[str, Any]], limit: int = WINDOWS_SHOWN) -> list[dict[str, Any]]:
    """The latest ``limit`` monitoring windows of the champion(s), oldest first, with drift per
    feature and quality (as last revised by late labels)."""
    from include.mlops.steps.monitoring.revision import revised_summary

    revisions = rt.store.latest_window_quality(rt.model_name)
    out: list[dict[str, Any]] = []
    for d in reversed(decisions):
        if d["kind"] != "monitor" or (d["inputs"] or {}).get("role") != CHAMPION:
            continue
        path = (d["inputs"] or {}).get("summary")
        try:
            summary = json.loads(Path(path).read_text()) if path else None
        except (OSError, ValueError):
            summary = None
        if summary is None:
            continue
        out.append(revised_summary(summary, d, revisions))
        if len(out) >= limit:
            break
    return list(reversed(out))


def gather(rt: Runtime) -> Status:
    from include.mlops.adapters.registry import TAG_MODE, TAG_SHARE, mlflow_client
    from include.mlops.steps.value import read_value

    store, model, s = rt.store, rt.model_name, rt.settings
    ledger = store.list_ledger(model)
    decisions = store.list_decisions(model)
    champion, challenger = store.alias_holder(model, CHAMPION), store.alias_holder(model, CHALLENGER)
    mode: dict[str, Any] = {}
    try:
        rm = mlflow_client(s.mlflow_tracking_uri).get_registered_model(model)
        mode = {"mode": (rm.tags or {}).get(TAG_MODE), "share": (rm.tags or {}).get(TAG_SHARE), "aliases": dict(rm.aliases or {})}
    except Exception as exc:
        missing = getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"
        mode = {"error": "no version registered yet" if missing else f"MLflow unreachable ({type(exc).__name__})"}
    if challenger is not None:
        challenger = {**challenger, **{k: v for k, v in mode.items() if k in ("mode", "share")}}
    alerts = [a for a in store.list_alerts(model) if a["status"] == "open"]
    quarantine = store.list_quarantine(model)
    batches = store.list_batches(model)
    value = read_value(rt.lake)
    default = rt.entry.default if rt.entry is not None else True
    return Status(
        model=model,
        generated_at=utcnow(),
        champion=champion,
        challenger=challenger,
        serving=serving_health(s.serving_url),
        ledger=ledger[-30:],
        decisions=decisions[-40:],
        quarantine=quarantine[-20:],
        alerts=sorted(alerts, key=lambda a: ({"critical": 0, "warning": 1}.get(a["severity"], 2), -a["id"]))[:30],
        windows=champion_windows(rt, decisions),
        counts={
            "accepted_batches": sum(b["status"] == "accepted" for b in batches),
            "quarantined_batches": sum(b["status"] == "quarantined" for b in batches),
            "labelled_rows": store.count_ground_truth(model),
            "decisions": len(decisions),
            "open_alerts": len(alerts),
        },
        links={
            "airflow": s.airflow_url,
            "mlflow_model": f"{s.mlflow_url}/#/models/{quote(model)}",
            "evidently": s.evidently_url,
            "mlflow_aliases": json.dumps(mode.get("aliases", {})) if "aliases" in mode else mode.get("error", ""),
            "dags": urls.model_dags(s.airflow_url, model),
            "page": urls.model_page(model),
            "json": urls.model_json(model),
        },
        value=value.to_dict() if value else None,
        task=rt.spec.task,
        metric=rt.spec.promotion.metric,
        default=default,
    )


# -- rendering ----------------------------------------------------------------------------------
e = html.escape


def _t(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None else e(str(value))


def _run_link(s: Status, dag_id: str | None, run_id: str | None) -> str:
    if not dag_id or not run_id:
        return ""
    return f'<a href="{e(s.links["airflow"])}/dags/{quote(dag_id, safe="")}/runs/{quote(run_id, safe="")}" target="_top">{e(dag_id)}</a>'


def _version_link(s: Status, version: Any) -> str:
    if version in (None, ""):
        return "&ndash;"
    return f'<a href="{e(s.links["mlflow_model"])}/versions/{quote(str(version))}" target="_blank">v{e(str(version))}</a>'


def _file_link(path: str | None, label: str = "report") -> str:
    if not path:
        return ""
    return f'<a href="{e(urls.report_file(path))}" target="_blank">{e(label)}</a>'


_OUTCOME_CLASS = {
    "accepted": "ok", "deployed": "ok", "passed": "ok", "healthy": "ok", "registered": "ok", "promote": "ok", "promoted": "ok",
    "quarantined": "bad", "refused": "warn", "failed": "bad", "rollback": "bad", "rolled_back": "bad", "drift": "bad", "decay": "bad",
    "warning": "warn", "inconclusive": "warn", "insufficient_data": "muted", "noop": "muted",
}  # fmt: skip


def _badge(outcome: str) -> str:
    return f'<span class="b {_OUTCOME_CLASS.get(outcome, "muted")}">{e(outcome)}</span>'


def _serving_card(s: Status) -> str:
    def card(title: str, row: dict[str, Any] | None, extra: str = "") -> str:
        if row is None:
            return f'<div class="card"><h3>{title}</h3><p class="big">none</p></div>'
        return (
            f'<div class="card"><h3>{title}</h3><p class="big">{_version_link(s, row["to_version"])}</p>'
            f"<p>since {_t(row['created_at'])} UTC{extra}</p><p class=small>{e(row.get('reason') or '')[:160]}</p></div>"
        )

    ch = s.challenger
    mode = (
        f" &middot; {e(str(ch.get('mode')))}"
        + (f" {float(ch['share']):.0%}" if ch and ch.get("share") and ch.get("mode") == CANARY else "")
        if ch
        else ""
    )
    health = s.serving or {}
    if "error" in health:
        live = f"<span class='b bad'>serving API {e(health['error'])}</span>"
    else:
        live = "<span class='b ok'>serving API up</span> " + e(
            ", ".join(f"{k}={v}" for k, v in health.items() if k in ("champion", "challenger", "mode", "ready"))
        )
    return (
        f'<div class="cards">{card("Champion", s.champion)}{card("Challenger", ch, mode)}'
        f'<div class="card"><h3>Now</h3><p>{live}</p><p class=small>MLflow aliases: {e(s.links.get("mlflow_aliases", ""))}</p>'
        f"<p class=small>{s.counts.get('accepted_batches', 0)} batches accepted, {s.counts.get('quarantined_batches', 0)} quarantined, "
        f"{s.counts.get('labelled_rows', 0)} labelled rows, {s.counts.get('open_alerts', 0)} open alerts</p></div></div>"
    )


def _table(headers: list[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f"<p class=muted>{e(empty)}</p>"
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _drift_table(s: Status) -> str:
    if not s.windows:
        return "<p class=muted>no monitoring window judged yet</p>"
    features = list(s.windows[-1].get("drift", {}).get("columns", {}))
    head = "<th>feature</th>" + "".join(
        f"<th title='{e(w['window_start'])}'>{e(w['window_start'][5:10])}<br><span class=small>v{e(w['version'])}</span></th>"
        for w in s.windows
    )
    rows = []
    for f in features:
        cells = []
        for w in s.windows:
            c = (w.get("drift", {}).get("columns", {}) or {}).get(f)
            if not c:
                cells.append("<td class=muted>&ndash;</td>")
                continue
            score = c.get("score")
            text = "null" if c.get("status") == "all_null" else ("&ndash;" if score is None else f"{score:.2f}")
            cells.append(f"<td class='{'cbad' if c.get('drifted') else 'cok'}' title='{e(str(c.get('method')))}'>{text}</td>")
        rows.append(f"<tr><td>{e(f)}</td>{''.join(cells)}</tr>")
    outcome = "".join(f"<td>{_badge(w['outcome'])}</td>" for w in s.windows)
    quality = "".join(_quality_cell(w.get("quality") or {}) for w in s.windows)
    reports = "".join(f"<td>{_file_link(w.get('report'))}</td>" for w in s.windows)
    return (
        f"<table class=grid><tr>{head}</tr><tr><td><b>outcome</b></td>{outcome}</tr>"
        f"<tr><td><b>realized {e(str((s.windows[-1].get('quality') or {}).get('metric') or s.metric))}</b></td>{quality}</tr>"
        f"{_estimated_row(s)}{''.join(rows)}<tr><td>Evidently</td>{reports}</tr></table>"
        "<p class=small>Cells: drift score of each feature (method in the tooltip); red = drifted. Columns: event-time windows.</p>"
    )


def _estimated_row(s: Status) -> str:
    """CBPE's label-free ROC AUC estimate per window: a classifier's only (its scores are probabilities)."""
    if s.task == REGRESSION:
        label = "<td><b>estimated without labels</b><br><span class=small>CBPE</span></td>"
        why = "not applicable: CBPE estimates a classifier's ROC AUC from its probabilities; a regression model waits for labels"
        return f"<tr>{label}<td colspan={len(s.windows)} class=muted>{e(why)}</td></tr>"
    label = "<td><b>estimated roc_auc</b><br><span class=small>CBPE, without labels</span></td>"
    cells = []
    for w in s.windows:
        est = (w.get("quality") or {}).get("estimated") or {}
        value, low, high = est.get("value"), est.get("lower"), est.get("upper")
        if not isinstance(value, float):
            cells.append(f"<td class=muted title='{e(str(est.get('reason') or 'no estimate'))}'>&ndash;</td>")
            continue
        band = f" title='{low:.3f} to {high:.3f}'" if isinstance(low, float) and isinstance(high, float) else ""
        cells.append(f"<td{band}>{value:.3f}</td>")
    return f"<tr>{label}{''.join(cells)}</tr>"


def _quality_cell(q: dict[str, Any]) -> str:
    """A window's realized quality, its labelled rows, and "revised" when late labels changed it
    (the verdict's value in the tooltip; red when only the revision showed decay)."""
    live, rows, revised = q.get("live"), q.get("labelled_rows"), q.get("revised") or {}
    note = f"{'revised, ' if revised else ''}{rows} labelled" if isinstance(rows, int) else ""
    first = revised.get("first_live")
    at_verdict = f"{first:.3f}" if isinstance(first, float) else "no value"
    title = f" title='at the verdict: {at_verdict} on {revised.get('first_labelled_rows')} labelled'" if revised else ""
    bad = " class=cbad" if revised.get("decayed") else ""
    value = f"{live:.3f}" if isinstance(live, float) else "&ndash;"
    small = f"<br><span class=small>{e(note)}</span>" if note else ""
    return f"<td{bad or ('' if isinstance(live, float) else ' class=muted')}{title}>{value}{small}</td>"


def higher_better(metric: str) -> bool:
    """Which way ``metric`` is better (``domain.tasks``; an unknown name reads as higher-is-better)."""
    for metrics in METRICS.values():
        if metric in metrics:
            return metrics[metric].higher_is_better
    return True


def _value_table(s: Status) -> str:
    """Served vs the first champion (and scheduled retraining when computed) per month, on the same
    labelled served rows."""
    v = s.value
    if not v:
        return "<p class=muted>not computed yet: the monitoring pass computes it once labelled traffic exists</p>"
    if v.get("note"):
        return f"<p class=muted>{e(v['note'])}</p>"
    months, total = v.get("months") or [], v.get("overall") or {}
    name = str(v.get("metric") or s.metric)
    higher_is_better = higher_better(name)
    scheduled = any(m.get("scheduled") is not None for m in months)
    newest = any(m.get("scheduled_newest") is not None for m in months)
    cols = ["served", "first_champion"] + (["scheduled"] if scheduled else []) + (["scheduled_newest"] if newest else [])
    names = {
        "served": "served",
        "first_champion": f"first champion v{v.get('first_champion')}",
        "scheduled": "scheduled, every 7 days",
        "scheduled_newest": "every 7 days, newest labels",
    }

    def fig(x: Any) -> str:
        return "<td class=muted>&ndash;</td>" if x is None else f"<td>{float(x):.4f}</td>"

    def gain(row: dict[str, Any]) -> str:
        a, b = row.get("served"), row.get("first_champion")
        if a is None or b is None:
            return "<td class=muted>&ndash;</td>"
        better = a >= b if higher_is_better else a <= b
        return f"<td class='{'cok' if better else 'cbad'}'>{a - b:+.4f}</td>"

    rows = [f"<tr><td>{e(m['month'])}</td><td>{m['rows']}</td>{''.join(fig(m.get(c)) for c in cols)}{gain(m)}</tr>" for m in months]
    rows.append(
        f"<tr><td><b>mean of months</b></td><td>{total.get('rows', '')}</td>{''.join(fig(total.get(c)) for c in cols)}{gain(total)}</tr>"
    )
    head = "".join(f"<th>{e(h)}</th>" for h in ["month (event time)", "labelled rows", *(names[c] for c in cols), "served - first"])
    title = "ROC AUC" if name == "roc_auc" else name
    return (
        f"<table class=grid><tr>{head}</tr>{''.join(rows)}</table><p class=small>{e(title)} per month "
        f"({'higher' if higher_is_better else 'lower'} is better) on the labelled requests as "
        "served (one per entity): the predictions users got, the first champion predicting the same rows offline"
        + (
            ", and the spec's pipeline refitted every 7 days on the labels the loop had (computed at the end of <code>make demo</code>)"
            + (": on the loop's training window, and on the newest labels with no holdout held back" if newest else "")
            if scheduled
            else ""
        )
        + f". Versions served: {e(', '.join(map(str, v.get('served_versions') or [])))}.</p>"
    )


CSS = """
body{font:14px/1.4 system-ui,-apple-system,sans-serif;margin:16px 20px;color:#1d2939;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 8px;border-bottom:1px solid #eaecf0;padding-bottom:4px}
h3{font-size:13px;margin:0 0 6px;color:#475467;text-transform:uppercase;letter-spacing:.04em}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{border:1px solid #eaecf0;border-radius:8px;padding:10px 14px;min-width:220px;flex:1}
.big{font-size:26px;margin:0}.small{font-size:12px;color:#667085}.muted{color:#98a2b3}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #f2f4f7;padding:4px 6px;text-align:left;vertical-align:top}
th{font-size:12px;color:#475467;background:#f9fafb}
.grid td{text-align:center;font-variant-numeric:tabular-nums}.grid td:first-child{text-align:left}
.b{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px}.ok{background:#dcfae6;color:#067647}
.bad{background:#fee4e2;color:#b42318}.warn{background:#fef0c7;color:#b54708}.b.muted{background:#f2f4f7}
.cbad{background:#fee4e2;color:#b42318;font-weight:600}.cok{color:#475467}
.sev-critical{color:#b42318;font-weight:600}.sev-warning{color:#b54708}
.pre{white-space:pre-wrap}a{color:#175cd3;text-decoration:none}a:hover{text-decoration:underline}
"""


DECISION_HEADERS = ["time (UTC)", "kind", "subject", "outcome", "reason code", "reasons", "links"]
QUARANTINE_HEADERS = ["time (UTC)", "file", "reason codes", "reasons", "report"]


def document(title: str, body: str, refresh: bool = True) -> str:
    """A whole page: ``body`` (already escaped HTML) with the shared style, refreshed every 30 s."""
    again = '<meta http-equiv="refresh" content="30">' if refresh else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{e(title)}</title>
{again}<style>{CSS}</style></head><body>
{body}
</body></html>"""


def not_found(detail: str) -> str:
    """The page a browser gets for an address with no model behind it."""
    return document(
        "MLOps loop: not found",
        f'<h1>Not found</h1><p>{e(detail)}</p><p><a href="{e(urls.home())}">All models of the deployment</a></p>',
        refresh=False,
    )


def render(s: Status) -> str:
    """The model's page."""
    return document(f"MLOps loop: {s.model}", render_body(s))


def _heading(s: Status) -> str:
    kind = "regression" if s.task == REGRESSION else "binary classification"
    default = " <span class='b muted'>default model</span>" if s.default else ""
    dags = s.links.get("dags")
    return f"""<h1>MLOps loop: {e(s.model)}{default}</h1>
<p class=small>{e(kind)}, figures in {e(s.metric)} &middot; generated {_t(s.generated_at)} UTC &middot; refreshes every 30 s &middot;
<a href="{e(urls.home())}">all models</a> &middot;
{f'<a href="{e(dags)}" target="_top">DAGs (tag {e(urls.model_tag(s.model))})</a> &middot;' if dags else ""}
<a href="{e(s.links["mlflow_model"])}" target="_blank">MLflow model</a> &middot;
<a href="{e(s.links["evidently"])}" target="_blank">Evidently dashboards</a> &middot;
<a href="{e(s.links.get("json") or PREFIX + "/api/status")}" target="_blank">JSON</a></p>"""


def render_body(s: Status) -> str:
    """The model's page without the document around it (the overview shows the default model's)."""
    ledger_rows = [
        f"<tr><td>{_t(r['created_at'])}</td><td>{e(r['alias'])}</td>"
        f"<td>{_version_link(s, r['from_version'])} &rarr; {_version_link(s, r['to_version'])}</td>"
        f"<td>{_badge(r['action'])} {e(r['strategy'] or '')}</td><td>{_run_link(s, r['dag_id'], r['run_id']) or e(r['actor'] or '')}</td>"
        f"<td class=small>{e((r['reason'] or '')[:220])}</td></tr>"
        for r in reversed(s.ledger)
    ]
    decision_rows = [
        f"<tr><td>{_t(d['created_at'])}</td><td>{e(d['kind'])}</td><td>{e(d['subject'] or '')}</td><td>{_badge(d['outcome'])}</td>"
        f"<td><code>{e(d['reason_code'])}</code></td><td class=small>{e('; '.join(map(str, d['reasons'] or []))[:240])}</td>"
        f"<td>{_run_link(s, d['dag_id'], d['run_id'])} {_file_link(d['report_uri'])}</td></tr>"
        for d in reversed(s.decisions)
    ]
    quarantine_rows = [
        f"<tr><td>{_t(q['created_at'])}</td><td>{e(q['file_name'])}</td>"
        f"<td><code>{e(', '.join(q['reason_codes']))}</code></td>"
        f"<td class=small>{e('; '.join(r.get('message', '') for r in q['reasons'])[:240])}</td><td>{_file_link(q['report_path'])}</td></tr>"
        for q in reversed(s.quarantine)
    ]
    alert_rows = [
        f"<tr><td class='sev-{e(a['severity'])}'>{e(a['severity'])}</td><td>{e(a['kind'])}</td>"
        f"<td>{e(a['message'][:260])}</td>"
        f"<td>{a['count']}</td><td>{_t(a['first_seen'])}</td><td>{_t(a['last_seen'])}</td></tr>"
        for a in s.alerts
    ]
    return f"""{_heading(s)}
{_serving_card(s)}
<h2>Open alerts</h2>{_table(["severity", "kind", "message", "count", "first seen", "last seen"], alert_rows, "no open alert")}
<h2>Drift and quality over recent windows (champion)</h2>{_drift_table(s)}
<h2>Realized value: what users got vs the first champion</h2>{_value_table(s)}
<h2>Deployment ledger</h2>{_table(["time (UTC)", "alias", "versions", "action", "by", "reason"], ledger_rows, "no alias change yet")}
<h2>Latest decisions</h2>{_table(DECISION_HEADERS, decision_rows, "no decision yet")}
<h2>Quarantined batches</h2>{_table(QUARANTINE_HEADERS, quarantine_rows, "no batch quarantined")}"""


def as_json(s: Status) -> dict[str, Any]:
    def clean(v: Any) -> Any:
        if isinstance(v, datetime):
            return v.isoformat()
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    out: dict[str, Any] = clean(s.__dict__)
    return out


def safe_report_path(rt: Runtime, requested: str) -> Path | None:
    """A file under the lake's reports folder (or the quarantine reports), never anything else."""
    base = (rt.lake.root / "reports").resolve()
    try:
        path = Path(requested).resolve()
    except (OSError, ValueError):
        return None
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path
