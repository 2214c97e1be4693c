"""The whole loop, live: replay 2013 through the running stack, with fire drills.

    python -m tooling.demo                  # the year (about 15 minutes here)
    python -m tooling.demo --fast           # January to April, every drill (CI's e2e run)
    python -m tooling.demo --end 2013-06-30 --drills celsius_batch,fragile_canary --seconds-per-day 2

What it does, in event time (the flights' scheduled departures), with Airflow's scheduler running
every DAG through its asset and cron schedules:

1. resets the demo's state and brings the stack up (``--keep`` reuses it as it is);
2. lands January's outcomes and the first week of February, trains the first model on January and
   lets ``deploy_validated_model`` make it champion;
3. replays each day: the day's flights go to the serving API as prediction requests, the previous
   day's outcomes land as a label batch (label delay: one day), and every ``monitoring.window_hours``
   the closed window is announced to ``monitor_model``;
4. fire drills along the way: a corrupted (truncated) label batch and a Celsius batch (quarantined,
   then re-sent corrected), a model that is fine offline and bad live (a canary that fails on a
   destination only production traffic has: rolled back by the early window), the seasonal shift
   (drift, governed retraining, gates, canary, promotion or refusal on evidence) and a manual
   rollback;
5. ends with a summary (what happened when, which version served when, links) and a timeline
   picture, both under ``<home>/demo/``. The stack stays up: explore, then ``make down``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops.domain.clock import utcnow
from include.mlops.domain.roles import CANARY, CHALLENGER, CHAMPION
from include.mlops.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.adapters.airflow_api import AirflowClient
    from include.mlops.runtime import Runtime

log = logging.getLogger(__name__)

DAG_IDS = [
    "ingest_outcomes",
    "train_candidate",
    "deploy_validated_model",
    "check_early_window",
    "promote_or_rollback",
    "monitor_model",
    "retrain_on_drift",
]
DRILLS = ("corrupted_batch", "celsius_batch", "fragile_canary", "manual_rollback")
#: A destination only production traffic has: in the 2013 data it appears only on a cancelled
#: flight, so no label batch, no training window and no spec category ever contains it.
PRODUCTION_ONLY_DEST = "LGA"
FRAGILE = "tooling.drills:fragile_pipeline"


@dataclass
class Plan:
    start: date
    end: date
    first_traffic: date
    drills: dict[str, date]
    seconds_per_day: float
    fragile_share: float = 0.15


def make_plan(start: date, end: date, drills: list[str], seconds_per_day: float, fast: bool) -> Plan:
    """When each drill happens: spread over the range, after the first champion has settled."""
    first = start + timedelta(days=38)  # January trains the first model, Feb 1-7 is its holdout
    span = max((end - first).days, 30)

    def at(fraction: float) -> date:
        return first + timedelta(days=int(span * fraction))

    when = {
        "corrupted_batch": first + timedelta(days=3),
        "celsius_batch": first + timedelta(days=6),
        # the short run starts it a week after the first champion, before the first drift-driven
        # retrain: with the loop as fast as the replay, retrain cycles can follow one another to
        # the end of April and the drill waits for a moment with no training and no challenger
        "fragile_canary": first + timedelta(days=7) if fast else at(0.15),
        "manual_rollback": at(0.92),
    }
    return Plan(start, end, first, {d: when[d] for d in drills}, seconds_per_day)


@dataclass
class Tally:
    """What the replay itself saw (the e2e test checks it against the stack's own records)."""

    requests: int = 0
    rows: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failed: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    #: wall clock (UTC) at which each simulated day's traffic started: maps wall time to event time
    day_started: dict[str, datetime] = field(default_factory=dict)

    def note(self, when: date | datetime, what: str, **details: Any) -> None:
        self.events.append({"event_time": str(when), "wall": datetime.now().strftime("%H:%M:%S"), "what": what, **details})
        print(f"  [{when}] {what}" + (f" {json.dumps(details, default=str)}" if details else ""), flush=True)


# -- the stack ------------------------------------------------------------------------------------
def reset_and_start(s: Settings, keep: bool) -> None:
    from tooling import stack

    if keep:
        print("reusing the running stack and its state (--keep)", flush=True)
        stack.up(s)
        return
    print(f"resetting the demo state in {s.home} (the flights cache is kept) ...", flush=True)
    stack.down(s)
    if s.home.exists():
        for child in s.home.iterdir():
            if child.name in ("cache", stack.HOME_MARKER) or child.name.startswith("pytest-"):
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
    stack.up(s)


def wait_until(check: Any, timeout: float, what: str, poll: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def wait_for_dags(client: AirflowClient, dag_ids: list[str] | None = None) -> None:
    def ready() -> bool:
        try:
            return all(not client.dag(d)["is_paused"] for d in dag_ids or DAG_IDS)
        except Exception:
            return False

    wait_until(ready, 300, "every DAG to be parsed and unpaused")


def asset_id(client: AirflowClient, name: str) -> int:
    body = client.request("GET", "/assets", params={"name_pattern": name, "limit": 50})
    for a in (body or {}).get("assets", []):
        if a["name"] == name:
            return int(a["id"])
    raise LookupError(f"asset {name} is not known to Airflow yet")


def idle(client: AirflowClient, dag_ids: list[str] | None = None) -> bool:
    """No DAG run of the loop is queued or running, but an early window: with the replay over, no
    traffic comes to fill it (it ends inconclusive at its ``max_minutes``, or on more traffic)."""
    for d in dag_ids or DAG_IDS:
        if d.rpartition(".")[2] == "check_early_window":
            continue
        for r in client.runs(d, limit=5):
            if r["state"] in ("queued", "running") and not _awaiting_labels(client, d, r):
                return False
    return True


def _awaiting_labels(client: AirflowClient, dag_id: str, run: dict[str, Any]) -> bool:
    """A promote_or_rollback run still waiting for its release's labels: with the replay over, the
    labels it waits for are in, or none come (idle, as an early window is)."""
    if dag_id.rpartition(".")[2] != "promote_or_rollback" or run["state"] != "running":
        return False
    states = {t["task_id"]: t["state"] for t in client.task_instances(dag_id, run["dag_run_id"])}
    return states.get("await_labels") in ("up_for_reschedule", "scheduled", "queued")


# -- traffic and labels -------------------------------------------------------------------------
def request_rows(day_df: pd.DataFrame, rt: Runtime) -> list[dict[str, Any]]:
    import math

    spec = rt.spec
    cols = [spec.entity_id, spec.time_column, *spec.feature_names]
    integers = {f.name for f in spec.features if f.type == "integer"}
    rows = []
    for rec in day_df[cols].to_dict(orient="records"):
        row: dict[str, Any] = {}
        for k, v in rec.items():
            if isinstance(v, float) and math.isnan(v):
                row[str(k)] = None
            elif k in integers:
                row[str(k)] = int(v)
            else:
                row[str(k)] = v
        row[spec.time_column] = rec[spec.time_column].isoformat()
        rows.append(row)
    return rows


def send_traffic(http: Any, s: Settings, rows: list[dict[str, Any]], tally: Tally, chunk: int = 100, route: str = "/predict") -> None:
    for i in range(0, len(rows), chunk):
        part = rows[i : i + chunk]
        try:
            resp = http.post(f"{s.serving_url}{route}", json={"rows": part}, headers=s.serving_headers(), timeout=60.0)
            status = resp.status_code
        except Exception as exc:
            status = 0
            tally.failed.append(f"{type(exc).__name__}: {exc}"[:200])
        tally.requests += 1
        tally.rows += len(part)
        tally.statuses[status] += 1
        if status != 200 and status != 0:
            tally.failed.append(f"HTTP {status}")


# -- the run ------------------------------------------------------------------------------------
def serving_now(http: Any, url: str, model: str | None = None) -> str:
    """What the serving API says it serves: the default model's, or ``model``'s (from ``/health``'s
    per-model section)."""
    try:
        h = http.get(f"{url}/health", timeout=5.0).json()
    except Exception:
        return "serving: unreachable"
    if model is not None:
        h = (h.get("models") or {}).get(model) or {}
    serving = h.get("serving") or {}
    text = f"champion v{serving.get('champion')}"
    if serving.get("challenger"):
        text += f", challenger v{serving.get('challenger')} ({serving.get('mode')})"
    return text


def last_decision(rt: Runtime) -> str:
    ds = [d for d in rt.store.list_decisions(rt.model_name) if d["kind"] != "gate"]
    if not ds:
        return "-"
    d = ds[-1]
    return f"{d['kind']} {d['outcome']} ({d['reason_code']})"


@dataclass
class Feed:
    """One model the demo drives: its runtime, window asset and drills, and where its windows are.
    The default model's feed comes first; every other model of the deployment gets one too (its
    traffic goes to its own route, its label batches to its own landing folder)."""

    rt: Runtime
    window_asset: int
    drills: Drills
    judging: datetime | None = None  # the end of the last window announced
    closed: ClosedWindow | None = None  # closed, not announced yet
    window_start: datetime | None = None  # the open window's start

    def dag(self, step: str) -> str:
        return self.rt.entry.dag_id(step) if self.rt.entry else step

    @property
    def default(self) -> bool:
        return self.rt.entry is None or self.rt.entry.default

    @property
    def route(self) -> str:
        return "/predict" if self.default or self.rt.entry is None else self.rt.entry.route

    @property
    def name(self) -> str:
        return self.rt.model_name


@dataclass
class Demo:
    """One demo run: the stack it drives, the plan and what it noticed (see :func:`run`)."""

    args: argparse.Namespace
    s: Settings
    feeds: list[Feed]
    client: AirflowClient
    http: Any
    flights: pd.DataFrame
    plan: Plan
    tally: Tally
    out_dir: Path
    started: float

    @property
    def rt(self) -> Runtime:
        """The default model's runtime."""
        return self.feeds[0].rt

    @property
    def drills(self) -> Drills:
        return self.feeds[0].drills

    def bootstrap(self) -> None:
        """1. January's labels (and the first week of February: the first model's holdout), then the
        first model of every model, trained at once."""
        from include.mlops.steps.ingest import notify_landing
        from tooling.replay import write_day

        plan, tally = self.plan, self.tally
        for feed in self.feeds:
            for i in range((plan.first_traffic - plan.start).days):
                write_day(feed.rt, self.flights, plan.start + timedelta(days=i))
            notify_landing(feed.rt.lake)
        tally.note(plan.start, f"landed the label batches of January and Feb 1-7 for {', '.join(f.name for f in self.feeds)}")
        for feed in self.feeds:
            wait_until(
                lambda f=feed: not any(p for p in f.rt.lake.landing.glob("outcomes_*")),
                600,
                f"{feed.name}'s bootstrap batches to be ingested",
            )
        for feed in self.feeds:
            run_id = self.client.trigger(
                feed.dag("train_candidate"),
                {"train_start": str(plan.start), "train_end": str(plan.start + timedelta(days=30)), "reason": "first model: January 2013"},
            )
            tally.note(plan.start, f"{feed.dag('train_candidate')} triggered for the first model", run_id=run_id)
        for feed in self.feeds:
            champion = wait_until(lambda f=feed: _alias(f.rt, CHAMPION), 900, f"the first champion of {feed.name}")
            tally.note(plan.first_traffic, f"first champion of {feed.name} v{champion} serving")
        wait_until(
            lambda: "champion v" in serving_now(self.http, self.s.serving_url) and "None" not in serving_now(self.http, self.s.serving_url),
            120,
            "serving to load it",
        )

    def announce(self, feed: Feed, w: ClosedWindow) -> None:
        """Signal a closed window once its label batches are ingested and the window before it is judged."""
        _wait_ingested(feed.rt, w.labels, self.args.window_timeout)
        if self.args.lockstep:
            self.settle_promotion(feed)
        if feed.judging is not None:  # backpressure: the previous window must be judged first
            _wait_judged(feed.rt, feed.judging, self.args.window_timeout, self.tally)
        self.client.request(
            "POST",
            "/assets/events",
            json={"asset_id": feed.window_asset, "extra": {"window_start": w.start.isoformat(), "window_end": w.end.isoformat()}},
        )
        state = serving_now(self.http, self.s.serving_url, None if feed.default else feed.name)
        prefix = "" if len(self.feeds) == 1 else f"{feed.name[:24]:24} "
        print(f"{w.last_day}  {prefix}{state:45}  last decision: {last_decision(feed.rt)}", flush=True)
        feed.judging = w.end

    def settle_promotion(self, feed: Feed) -> None:
        """Lockstep: a promotion waiting for labels that the batches just ingested complete is
        decided before the window is announced, so the retrain the window may cause finds the
        challenger slot as the backtest would, whatever the sensor's poke timing."""
        from include.mlops.domain.policy import FinalRequest
        from include.mlops.steps.release import await_labels

        dag_id = feed.dag("promote_or_rollback")
        if not _busy(self.client, (dag_id,)):
            return
        ready, info = await_labels(feed.rt, FinalRequest("promote", None, "lockstep", triggered=True))
        if not (ready and info.get("waited")):  # waiting on, or no challenger waits (e.g. a bake period runs)
            return
        try:
            wait_until(lambda: not _busy(self.client, (dag_id,)), self.args.window_timeout, f"{dag_id} to decide", poll=1.0)
        except TimeoutError as exc:
            self.tally.note(self.plan.end, f"moving on: {exc} ({info})")

    def replay(self) -> None:
        """2. the replay: as fast as the loop keeps up. A window closes when its last day's traffic is
        sent; it is announced once the label batches landed by then are ingested (realized quality
        needs them) and the window before it is judged. The next days' traffic goes on meanwhile,
        so the ingest overlaps the replay; at most one closed window waits (backpressure)."""
        plan = self.plan
        for feed in self.feeds:
            feed.window_start = datetime.combine(plan.first_traffic, datetime.min.time())
        day = plan.first_traffic
        extended = False
        while day <= plan.end:
            t0 = time.monotonic()
            closed = [self.replay_day(feed, day) for feed in self.feeds]
            if self.args.lockstep and any(closed):
                self.settle_windows()
            for feed in self.feeds:
                feed.drills.maybe_start(day, feed, self.client, self.tally)
            waiting = [f.drills for f in self.feeds if f.drills.rollback_waiting() and day < f.drills.last_day]
            if day == plan.end and waiting:
                # the manual rollback needs a champion served before the current one: when no
                # promotion happened in the range, go on a day at a time until one does (bounded)
                plan.end = day + timedelta(days=1)
                if not extended:
                    why = "no promotion yet, nothing to roll back to"
                    self.tally.note(day, f"drill manual_rollback: {why}; replaying on until {min(d.last_day for d in waiting)} at most")
                    extended = True
            day += timedelta(days=1)
            time.sleep(max(plan.seconds_per_day - (time.monotonic() - t0), 0))

    def settle_windows(self) -> None:
        """Lockstep (``--lockstep``): event time waits for the loop, as in the backtest. Each window
        just closed is announced with the labels landed by its end, judged, and every run it causes
        (governance, training, deployment) finishes before the next day's traffic; only a release
        waiting for traffic (early window, promotion on labels) runs on with the replay."""
        judged = []
        for feed in self.feeds:
            closed, feed.closed = feed.closed, None
            if closed is not None:
                self.announce(feed, closed)
                judged.append((feed, closed))
        for feed, closed in judged:
            _wait_judged(feed.rt, closed.end, self.args.window_timeout, self.tally)
        dags = tuple(f.dag(step) for f in self.feeds for step in LOCKSTEP_DAGS)

        def settled() -> bool:  # idle twice, a few seconds apart: an asset-triggered run is created a moment after its event
            if _busy(self.client, dags):
                return False
            time.sleep(3.0)
            return not _busy(self.client, dags)

        try:
            wait_until(settled, self.args.settle_timeout, "the windows' retrain, training and deployment runs")
        except TimeoutError as exc:
            self.tally.note(judged[0][1].last_day if judged else self.plan.end, f"moving on: {exc}")

    def replay_day(self, feed: Feed, day: date) -> bool:
        """One model's day: its traffic, the labels due by then, the window it may close. Returns
        whether a window closed."""
        from include.mlops.steps.ingest import notify_landing
        from tooling.replay import day_frame

        rt, plan = feed.rt, self.plan
        if feed.default:
            self.tally.day_started[str(day)] = utcnow()
        df = day_frame(self.flights, rt.spec, day)
        if feed.drills.fragile_live(rt):  # production traffic now includes a destination only production has
            df = df.copy()
            hit = df.index[:: max(int(1 / plan.fragile_share), 1)]
            df.loc[hit, "dest"] = PRODUCTION_ONLY_DEST
        send_traffic(self.http, self.s, request_rows(df, rt), self.tally, route=feed.route)
        labels_day = day - timedelta(days=max(rt.spec.label_delay_hours // 24, 1))
        if labels_day >= plan.first_traffic:
            _land_labels(rt, self.flights, labels_day, plan, self.tally)
        if feed.closed is not None and _ingested(rt, feed.closed.labels) and (feed.judging is None or _judged(rt, feed.judging)):
            self.announce(feed, feed.closed)
            feed.closed = None
        window_end = datetime.combine(day + timedelta(days=1), datetime.min.time())
        assert feed.window_start is not None
        if window_end - feed.window_start >= timedelta(hours=rt.spec.monitoring.window_hours) or day == plan.end:
            # the producer signals once per window: one ingest run takes the week's batches
            notify_landing(rt.lake)
            if feed.closed is not None:
                self.announce(feed, feed.closed)
            feed.closed = ClosedWindow(feed.window_start, window_end, day, _landed(rt))
            feed.window_start = window_end
            return True
        return False

    def finish(self) -> None:
        """3. let the loop finish what the last days started, then tell the story (the default
        model's at the top of summary.json, every other model's under ``models``)."""
        from include.mlops.steps.ingest import notify_landing

        plan, tally = self.plan, self.tally
        for feed in self.feeds:
            notify_landing(feed.rt.lake)
            if feed.closed is not None:
                self.announce(feed, feed.closed)
        tally.note(plan.end, "replay done; waiting for the loop to settle")
        dags = [f.dag(step) for f in self.feeds for step in DAG_IDS]
        try:
            wait_until(lambda: idle(self.client, dags), self.args.settle_timeout, "every DAG run to finish", poll=5)
        except TimeoutError as exc:
            tally.note(plan.end, f"not settled: {exc}")
        seconds = time.monotonic() - self.started
        summaries = {}
        for feed in self.feeds:
            feed.drills.fragile_live(feed.rt)
            summary = summarize(feed, self.client, tally, plan, seconds)
            summary["fragile_version"] = feed.drills.fragile_version
            summary["loop_latency"] = loop_latency(feed.rt, tally)
            summaries[feed.name] = summary
        first = dict(summaries[self.feeds[0].name])
        first["models"] = {name: summary for name, summary in summaries.items() if name != self.feeds[0].name}
        (self.out_dir / "summary.json").write_text(json.dumps(first, indent=1, default=str))
        for feed in self.feeds:
            out_dir = self.out_dir if feed.default else self.out_dir / feed.name
            out_dir.mkdir(parents=True, exist_ok=True)
            timeline_png(feed.rt, out_dir / "timeline.png", plan)
            if len(self.feeds) > 1:
                print(f"\n##### model {feed.name} ({feed.rt.spec.task})", flush=True)
            print_summary(summaries[feed.name], out_dir)
            print_value(feed.rt, out_dir)


def run(args: argparse.Namespace) -> int:
    import httpx

    from include.mlops.adapters.airflow_api import AirflowClient
    from include.mlops.catalog import load_catalog
    from include.mlops.runtime import load_runtime
    from tooling.flights import load_flights

    s = get_settings()
    started = time.monotonic()
    reset_and_start(s, args.keep)
    s = get_settings()  # with what `make up` generated (the serving API's admin token)
    catalog = load_catalog(s)
    for path, why in catalog.errors.items():
        print(f"spec {path} left out: {why}", flush=True)
    client = AirflowClient.for_home(s.airflow_url, s.airflow_home)
    plan = make_plan(args.start, args.end, args.drills, args.seconds_per_day, args.fast)
    feeds = []
    for entry in catalog.models:
        rt = load_runtime(s, entry.name)
        feed = Feed(rt, 0, Drills(plan))
        wait_for_dags(client, [feed.dag(step) for step in DAG_IDS])
        feed.window_asset = asset_id(client, f"{entry.prefix}inference_window_closed")
        feeds.append(feed)
    flights = load_flights(s.home / "cache")
    out_dir = s.home / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    demo = Demo(args, s, feeds, client, httpx.Client(), flights, plan, Tally(), out_dir, started)
    models = ", ".join(f"{f.name} ({f.rt.spec.task})" for f in feeds)
    print(f"\nplan: {plan.start} -> {plan.end}, traffic from {plan.first_traffic}; drills {plan.drills}; models {models}\n", flush=True)
    demo.bootstrap()
    demo.replay()
    demo.finish()
    return 0


#: How far the replay may go past the requested end for a manual rollback that has nothing to roll
#: back to yet (no promotion in the range), and the last day of the flights data.
EXTRA_DAYS = timedelta(days=42)
LAST_DAY = date(2013, 12, 31)


class Drills:
    """The two drills that need the loop's cooperation start only when the loop is ready for them."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.fragile_run: str | None = None
        self.fragile_version: str | None = None
        self.fragile_redeployed = False
        self.rollback_done = False
        #: the replay may go past the plan's end, up to this day, for a manual rollback still waiting
        self.last_day = min(plan.end + EXTRA_DAYS, LAST_DAY)

    def rollback_waiting(self) -> bool:
        """The manual rollback drill is due but has had nothing to roll back to."""
        return "manual_rollback" in self.plan.drills and not self.rollback_done

    def _fragile_may_redeploy(self, feed: Feed, client: AirflowClient) -> bool:
        rt = feed.rt
        if self.fragile_version is None or self.fragile_redeployed or not _refused_busy(rt, self.fragile_version):
            return False
        steps = ("deploy_validated_model", "check_early_window", "promote_or_rollback")
        return not _alias(rt, CHALLENGER) and not _busy(client, tuple(feed.dag(d) for d in steps))

    def fragile_live(self, rt: Runtime) -> bool:
        if self.fragile_run and self.fragile_version is None:
            for d in rt.store.list_decisions(rt.model_name, "training"):
                if d["run_id"] == self.fragile_run and d["outcome"] == "registered":
                    self.fragile_version = str(d["inputs"]["version"])
        return self.fragile_version is not None and _alias(rt, CHALLENGER) == self.fragile_version

    def maybe_start(self, day: date, feed: Feed, client: AirflowClient, tally: Tally) -> None:
        rt = feed.rt
        drills = self.plan.drills
        if (
            "fragile_canary" in drills
            and self.fragile_run is None
            and day >= drills["fragile_canary"]
            # one challenger at a time: start when the current evaluation is over (checked daily)
            and not _alias(rt, CHALLENGER)
            and not _busy(client, tuple(feed.dag(d) for d in ("train_candidate", "deploy_validated_model", "check_early_window")))
        ):
            window = _champion_window(rt)  # the champion's own data: the same model, but fragile
            self.fragile_run = client.trigger(
                feed.dag("train_candidate"),
                {
                    "pipeline": FRAGILE,
                    "train_start": window.get("train_start"),
                    "train_end": window.get("train_end"),
                    "reason": "fire drill: a model fine offline, bad in production",
                },
            )
            tally.note(
                day,
                f"drill fragile_canary: training a fragile candidate of {feed.name}; its live traffic gets dest={PRODUCTION_ONLY_DEST}",
                run_id=self.fragile_run,
            )
        if self._fragile_may_redeploy(feed, client):
            # a retrain's canary took the challenger slot first: deploy the fragile one now it is free
            run_id = client.trigger(
                feed.dag("deploy_validated_model"),
                {
                    "version": self.fragile_version,
                    "strategy": CANARY,
                    "reason": "fire drill: the fragile candidate, once the slot was free",
                },
            )
            self.fragile_redeployed = True
            what = f"drill fragile_canary: {feed.name} v{self.fragile_version} waited for the challenger slot; deploying it"
            tally.note(day, what, run_id=run_id)
        if "manual_rollback" in drills and not self.rollback_done and day >= drills["manual_rollback"]:
            champions = [r for r in rt.store.list_ledger(rt.model_name, CHAMPION) if r["to_version"]]
            if len(champions) < 2 and day < self.last_day:
                return  # nothing served before the champion yet: wait for a promotion (the replay goes on)
            dag_id = feed.dag("promote_or_rollback")
            run_id = client.trigger(dag_id, {"action": "rollback", "reason": "demo drill: manual rollback from the UI"})
            self.rollback_done = True
            tally.note(day, f"drill manual_rollback: {dag_id} triggered with action=rollback ({feed.name})", run_id=run_id)


def _refused_busy(rt: Runtime, version: str) -> bool:
    return any(
        d["version"] == int(version) and d["outcome"] == "refused" and d["reason_code"] == "challenger_busy"
        for d in rt.store.list_decisions(rt.model_name, "deployment")
    )


def _champion_window(rt: Runtime) -> dict[str, Any]:
    from include.mlops.adapters.registry import mlflow_client

    version = _alias(rt, CHAMPION)
    if version is None:
        return {}
    tags = mlflow_client(rt.settings.mlflow_tracking_uri).get_model_version(rt.model_name, version).tags or {}
    window: dict[str, Any] = json.loads(tags.get("mlops.window") or "{}")
    return window


def loop_latency(rt: Runtime, tally: Tally) -> list[dict[str, Any]]:
    """The first drift-driven turn of the loop that reached a canary (else the first one): from the
    first day of its drifted window replayed to drift detected, retrain accepted, candidate
    registered (by train_candidate on the retrain_requested asset), canary serving and promoted, in
    wall seconds and in simulated days (where the replay was when each happened)."""
    days = sorted((wall, day) for day, wall in tally.day_started.items())
    if not days:
        return []
    decisions = rt.store.list_decisions(rt.model_name)
    ledger = rt.store.list_ledger(rt.model_name)
    chains = []
    for acc in (d for d in decisions if d["kind"] == "governance" and d["outcome"] == "accepted"):
        drifts = [d for d in decisions if d["kind"] == "monitor" and d["outcome"] in ("drift", "decay") and d["id"] < acc["id"]]
        if not drifts:
            continue
        trained = next(
            (
                d
                for d in decisions
                if d["kind"] == "training"
                and d["outcome"] == "registered"
                and d["id"] > acc["id"]
                and str(d["run_id"] or "").startswith("asset_triggered")
            ),
            None,
        )
        version = str(trained["inputs"].get("version")) if trained else None
        canary = next((r for r in ledger if r["alias"] == CHALLENGER and r["to_version"] == version and r["action"] == "set"), None)
        promoted = next((r for r in ledger if r["alias"] == CHAMPION and r["to_version"] == version), None)
        chains.append((drifts[-1], acc, trained, canary, promoted))
    if not chains:
        return []
    drift, acc, trained, canary, promoted = next((c for c in chains if c[3] is not None), chains[0])
    if drift["window_start"] is None:
        return []
    window_start = f"{drift['window_start']:%Y-%m-%d}"
    origin_wall = tally.day_started.get(window_start)
    if origin_wall is None:
        return []

    def replay_day(wall: datetime) -> str:
        at = [day for started, day in days if started <= wall]
        return at[-1] if at else days[0][1]

    stages: list[tuple[str, datetime | None]] = [
        ("first drifted day replayed", origin_wall),
        ("drift detected", drift["created_at"]),
        ("retrain accepted", acc["created_at"]),
        ("candidate registered", trained["created_at"] if trained else None),
        ("canary serving", canary["created_at"] if canary else None),
        ("promoted", promoted["created_at"] if promoted else None),
    ]
    out: list[dict[str, Any]] = []
    for name, wall in stages:
        if wall is None:
            out.append({"stage": name, "wall_s": None, "event_day": None, "event_days": None})
            continue
        day = replay_day(wall)
        out.append(
            {
                "stage": name,
                "wall_s": round((wall - origin_wall).total_seconds(), 1),
                "event_day": day,
                "event_days": (date.fromisoformat(day) - date.fromisoformat(window_start)).days,
            }
        )
    return out


#: The runs a closed window may cause that need no more traffic: lockstep waits for them.
LOCKSTEP_DAGS = ("ingest_outcomes", "monitor_model", "retrain_on_drift", "train_candidate", "deploy_validated_model")


def _busy(client: AirflowClient, dag_ids: tuple[str, ...]) -> bool:
    return any(r["state"] in ("queued", "running") for d in dag_ids for r in client.runs(d, limit=3))


@dataclass
class ClosedWindow:
    """A window of traffic whose last day was sent, and the label batches landed by then."""

    start: datetime
    end: datetime
    last_day: date
    labels: frozenset[str]


def _landed(rt: Runtime) -> frozenset[str]:
    return frozenset(p.name for p in rt.lake.landing.glob("outcomes_*"))


def _ingested(rt: Runtime, names: frozenset[str]) -> bool:
    """ingest_outcomes has taken every one of these batches (accepted or quarantined)."""
    return not (names & _landed(rt))


def _wait_ingested(rt: Runtime, names: frozenset[str], timeout: float = 300.0) -> None:
    """Until ingest_outcomes has taken these batches (the cron sweep catches a missed signal);
    after ``timeout`` the window is announced anyway, as a producer would."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not _ingested(rt, names):
        time.sleep(0.5)


def _judged(rt: Runtime, window_end: datetime) -> bool:
    """monitor_model has recorded a decision on the window ending at ``window_end``."""
    return rt.store.decision_exists(rt.model_name, "monitor", window_end=window_end)


def _wait_judged(rt: Runtime, window_end: datetime, timeout: float, tally: Tally) -> None:
    try:
        wait_until(lambda: _judged(rt, window_end), timeout, f"monitor_model to judge the window ending {window_end}", poll=1.0)
    except TimeoutError as exc:
        tally.note(window_end.date(), f"moving on: {exc}")


def _alias(rt: Runtime, alias: str) -> str | None:
    holder = rt.store.alias_holder(rt.model_name, alias)
    return str(holder["to_version"]) if holder else None


def _land_labels(rt: Runtime, flights: pd.DataFrame, labels_day: date, plan: Plan, tally: Tally) -> None:
    from tooling.replay import write_day

    faults = {"corrupted_batch": "truncated", "celsius_batch": "celsius"}
    for drill, fault in faults.items():
        if drill in plan.drills and labels_day == plan.drills[drill]:
            write_day(rt, flights, labels_day, fault)
            tally.note(labels_day, f"drill {drill}: landed a {fault} label batch of {rt.model_name} for {labels_day}")
            return
        if drill in plan.drills and labels_day == plan.drills[drill] + timedelta(days=1):
            write_day(rt, flights, plan.drills[drill])  # the producer re-sends the corrected batch
            tally.note(labels_day, f"drill {drill}: the corrected batch of {rt.model_name} for {plan.drills[drill]} re-sent")
    write_day(rt, flights, labels_day)


# -- the story ----------------------------------------------------------------------------------
LEDGER_KEYS = ("created_at", "alias", "action", "from_version", "to_version", "strategy", "reason", "dag_id", "run_id")


def summarize(feed: Feed, client: AirflowClient, tally: Tally, plan: Plan, seconds: float) -> dict[str, Any]:
    """One model's story (the traffic tally and the events are the run's, shared by every model)."""
    from include.mlops.adapters.registry import aliases, mlflow_client

    rt = feed.rt
    s = rt.settings
    decisions = rt.store.list_decisions(rt.model_name)
    runs = {step: client.runs(feed.dag(step), limit=500) for step in DAG_IDS}
    failed_runs = {d: [r["dag_run_id"] for r in rs if r["state"] == "failed"] for d, rs in runs.items()}
    versions = mlflow_client(s.mlflow_tracking_uri).search_model_versions(f"name = '{rt.model_name}'")
    return {
        "model": rt.model_name,
        "range": [str(plan.start), str(plan.end)],
        "drills": {k: str(v) for k, v in plan.drills.items()},
        "wall_seconds": round(seconds),
        "traffic": {"requests": tally.requests, "rows": tally.rows, "statuses": dict(tally.statuses), "failed": tally.failed[:20]},
        "events": tally.events,
        "ledger": [
            {
                k: (v.isoformat() if isinstance(v, datetime) else v)
                for k, v in r.items()
                if k in ("created_at", "alias", "action", "from_version", "to_version", "strategy", "reason", "dag_id", "run_id")
            }
            for r in rt.store.list_ledger(rt.model_name)
        ],
        "aliases": aliases(mlflow_client(s.mlflow_tracking_uri), rt.model_name),
        "versions": {str(v.version): (v.tags or {}).get("mlops.status") for v in versions},
        "decisions": Counter(f"{d['kind']}:{d['outcome']}" for d in decisions),
        "quarantined": [{"file": q["file_name"], "reason_codes": q["reason_codes"]} for q in rt.store.list_quarantine(rt.model_name)],
        "dag_runs": {d: Counter(r["state"] for r in rs) for d, rs in runs.items()},
        "failed_dag_runs": {d: ids for d, ids in failed_runs.items() if ids},
        "links": {
            "airflow": s.airflow_url,
            "status_page": f"{s.airflow_url}/mlops-loop/",
            "mlflow_model": f"{s.mlflow_url}/#/models/{rt.model_name}",
            "evidently": s.evidently_url,
        },
    }


def print_summary(summary: dict[str, Any], out_dir: Path) -> None:
    print("\n=== mlops-loop demo: what happened ===")
    for row in summary["ledger"]:
        change = f"v{row['from_version'] or '-'} -> v{row['to_version'] or '-'}"
        print(f"  {row['created_at'][:19]}  {row['alias']:10} {change:14} {row['action']:11} {(row['reason'] or '')[:90]}")
    print("decisions:", json.dumps(summary["decisions"], sort_keys=True))
    print("quarantined:", ", ".join(f"{q['file']} ({', '.join(q['reason_codes'])})" for q in summary["quarantined"]) or "none")
    t = summary["traffic"]
    print(f"traffic: {t['requests']} requests, {t['rows']} rows, statuses {t['statuses']}")
    print(f"serving now: {summary['aliases']}; failed DAG runs: {summary['failed_dag_runs'] or 'none'}")
    if summary.get("loop_latency"):
        print("the first drift-driven turn of the loop (wall seconds / simulated days after its first drifted day):")
        for s in summary["loop_latency"]:
            done = s["wall_s"] is not None
            print(
                f"  {s['stage']:28} "
                + (f"{s['wall_s']:>7.0f} s  day +{s['event_days']} ({s['event_day']})" if done else "(did not happen)")
            )
    print(f"took {summary['wall_seconds']} s")
    for name, url in summary["links"].items():
        print(f"  {name:13} {url}")
    print(f"  summary      {out_dir / 'summary.json'}\n  timeline     {out_dir / 'timeline.png'}")
    print("The stack stays up for exploring; `make down` stops it.")


def print_value(rt: Runtime, out_dir: Path) -> None:
    """The loop's realized value on the rows it served (``steps.value``: served vs the first champion
    vs scheduled weekly retraining, per month), printed last and written to ``value.json`` (here and
    in the model's reports folder, where the status page reads it)."""
    from include.mlops.steps.value import compute_value, write_value

    try:
        value = compute_value(rt)
        write_value(rt.lake, value, out_dir / "value.json")
    except Exception as exc:  # the rest of the story is told already; say why this part is missing
        print(f"\nrealized value not computed: {type(exc).__name__}: {exc}", flush=True)
        return
    print(f"\n{value.table()}\n  value        {out_dir / 'value.json'}", flush=True)


def timeline_png(rt: Runtime, path: Path, plan: Plan) -> None:
    """Serving versions, drift share and realized quality over event time, in one picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ledger = rt.store.list_ledger(rt.model_name)
    windows = []
    for d in rt.store.list_decisions(rt.model_name, "monitor"):
        inp = d["inputs"] or {}
        start = d["window_start"]
        if inp.get("role") != CHAMPION or start is None or d["version"] is None:
            continue
        if not plan.start <= start.date() <= plan.end:
            continue  # a scheduled pass over a window outside the replay (nothing served there)
        live = (inp.get("quality") or {}).get("live")
        windows.append((start, inp.get("drift_share"), live, d["outcome"], int(d["version"])))
    fig, axes = plt.subplots(3, 1, figsize=(12, 7), sharex=True)
    # serving versions: map each ledger change (wall time) to the event time the replay was at
    versions = [(w[0], w[4]) for w in windows]
    if versions:
        xs, ys = zip(*versions, strict=True)
        axes[0].step(xs, ys, where="post", color="#175cd3", label="champion (monitored)")
    axes[0].set_ylabel("serving version")
    axes[0].legend(loc="upper left")
    drift = [(w[0], w[1]) for w in windows if w[1] is not None]
    if drift:
        xs, ys = zip(*drift, strict=True)
        axes[1].bar(xs, ys, width=5, color=["#b42318" if y >= rt.spec.monitoring.dataset_drift_share else "#98a2b3" for y in ys])
    axes[1].axhline(rt.spec.monitoring.dataset_drift_share, color="#b42318", linestyle="--", linewidth=1)
    axes[1].set_ylabel("share of drifted features")
    quality = [(w[0], w[2]) for w in windows if isinstance(w[2], float)]
    if quality:
        xs, ys = zip(*quality, strict=True)
        axes[2].plot(xs, ys, marker="o", color="#067647")
    axes[2].set_ylabel(f"realized {rt.spec.promotion.metric}")
    for drill, when in plan.drills.items():
        for ax in axes:
            ax.axvline(datetime.combine(when, datetime.min.time()), color="#b54708", alpha=0.4, linewidth=1)
        axes[0].annotate(drill, (datetime.combine(when, datetime.min.time()), axes[0].get_ylim()[1]), fontsize=8, rotation=90, va="top")
    axes[0].set_xlim(datetime.combine(plan.start, datetime.min.time()), datetime.combine(plan.end + timedelta(days=1), datetime.min.time()))
    fig.suptitle(f"{rt.model_name}: the loop over {plan.start:%b %Y}..{plan.end:%b %Y} ({len(ledger)} alias changes)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", type=date.fromisoformat, default=date(2013, 1, 1))
    parser.add_argument(
        "--end", type=date.fromisoformat, default=None, help="last replayed day (default: 2013-12-30, or 2013-04-30 with --fast)"
    )
    parser.add_argument("--drills", default="all", help=f"comma-separated, 'all' or 'none' ({', '.join(DRILLS)})")
    parser.add_argument("--seconds-per-day", type=float, default=None, help="least wall seconds per simulated day (default 0.5)")
    parser.add_argument("--fast", action="store_true", help="a short run: January to April with every drill")
    parser.add_argument("--keep", action="store_true", help="reuse the running stack and its state instead of resetting")
    parser.add_argument("--settle-timeout", type=float, default=600.0, help="seconds to wait for the loop to finish at the end")
    parser.add_argument("--window-timeout", type=float, default=300.0, help="longest wait for monitor_model to judge a window")
    parser.add_argument(
        "--lockstep",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="event time waits for the loop at each window close (judged, retrained, deployed) as the backtest does; "
        "--no-lockstep: the replay runs on while the loop works (decisions then depend on the machine's speed)",
    )
    args = parser.parse_args(argv)
    args.end = args.end or (date(2013, 4, 30) if args.fast else date(2013, 12, 30))
    args.seconds_per_day = args.seconds_per_day if args.seconds_per_day is not None else 0.5
    names = (
        list(DRILLS) if args.drills == "all" else [] if args.drills == "none" else [d.strip() for d in args.drills.split(",") if d.strip()]
    )
    unknown = [d for d in names if d not in DRILLS]
    if unknown:
        parser.error(f"unknown drill(s) {', '.join(unknown)}; known: {', '.join(DRILLS)}")
    args.drills = names
    if (args.end - args.start).days < 60:
        parser.error("the range must cover at least 60 days (January trains the first model)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from include.mlops.adapters.airflow_api import AirflowAPIError

    try:
        return run(args)
    except (TimeoutError, LookupError, AirflowAPIError) as exc:
        print(f"\ndemo stopped: {exc}\nlogs: {get_settings().logs_dir} (make logs); the stack is still up (make status).", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
