"""Deployment settings: every one from an environment variable, with a default.

This is the one place the project reads its deployment environment. Nothing happens at import:
call :func:`get_settings` (cheap, re-reads the environment each time) where a setting is needed.

The model's own contract (features, thresholds, policies) is not here: it lives in the spec file
(see :mod:`include.mlops.spec`); :attr:`Settings.spec_path` only says which spec to use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

#: Every variable this module reads, with its default and meaning (rendered into .env.example and
#: the README; a unit test keeps the three in step).
VARIABLES: dict[str, tuple[str, str]] = {
    "MLOPS_HOME": (".local", "state folder: databases, lake, logs, pids (git-ignored); relative to the project"),
    "MLOPS_SPEC": ("include/specs/flights.yaml", "spec file of the monitored model; relative to the project"),
    "MLOPS_MODEL_NAME": ("<spec name>", "registered model name in MLflow (defaults to the spec's name)"),
    "MLOPS_HOST": ("127.0.0.1", "interface every local service binds to"),
    "MLOPS_AIRFLOW_PORT": ("8080", "Airflow API server and UI"),
    "MLOPS_MLFLOW_PORT": ("5000", "MLflow tracking server and registry"),
    "MLOPS_SERVING_PORT": ("8000", "the model serving API"),
    "MLOPS_EVIDENTLY_PORT": ("8001", "Evidently UI"),
    "MLOPS_OPS_DB_URL": ("sqlite:///<home>/ops.db", "SQLAlchemy URL of the ops store (Postgres: postgresql+psycopg2://...)"),
    "MLOPS_LAKE": ("<home>/lake", "data lake root: landing, training pool, quarantine, reports"),
    "MLOPS_EVIDENTLY_WORKSPACE": ("<home>/evidently", "Evidently workspace folder"),
    "MLFLOW_TRACKING_URI": ("http://<host>:<mlflow port>", "MLflow tracking server used by DAGs and serving"),
    "MLOPS_SERVING_URL": ("http://<host>:<serving port>", "serving API base URL used by DAGs"),
    "MLOPS_LOG_LEVEL": ("INFO", "log level of the project's own loggers"),
    "MLOPS_SERVING_WORKERS": ("1", "uvicorn worker processes of the serving API (each polls the registry and writes the log itself)"),
    "MLOPS_SERVING_POLL_SECONDS": ("2", "how often the serving API re-reads the registry aliases (seconds)"),
    "MLOPS_SERVING_MAX_BODY_BYTES": ("1048576", "largest /predict request body the serving API accepts (bigger: 413)"),
    "MLOPS_SERVING_MAX_ROWS": ("1000", "most rows one /predict request may carry (more: 413)"),
    "MLOPS_SERVING_BATCH_WAIT_MS": ("3", "longest wait for the requests of just-answered clients to join a micro-batch (0: never wait)"),
    # -- alert delivery (README, "Alerts"): every channel is off until configured -------------
    "MLOPS_ALERT_MIN_SEVERITY": ("warning", "lowest severity sent to the alert channels: info, warning, critical (the store keeps all)"),
    "MLOPS_ALERT_COOLOFF_MINUTES": ("360", "a repeating open alert is sent again (one reminder) only this long after its last delivery"),
    "MLOPS_ALERT_WEBHOOK_URL": ("", "generic webhook: JSON POST of every delivered alert (empty: off)"),
    "MLOPS_ALERT_WEBHOOK_CONN_ID": ("", "Airflow connection holding the webhook URL (when set, used instead of MLOPS_ALERT_WEBHOOK_URL)"),
    "MLOPS_ALERT_SLACK_WEBHOOK_URL": ("", "Slack incoming-webhook URL (a secret; empty: off)"),
    "MLOPS_ALERT_SLACK_CONN_ID": ("", "Airflow connection holding the Slack webhook (slackwebhook format; instead of the URL above)"),
    "MLOPS_ALERT_EMAIL_TO": ("", "comma-separated recipients of alert emails (empty: off)"),
    "MLOPS_ALERT_SMTP_CONN_ID": ("", "Airflow SMTP connection (SMTP provider's format) for alert emails, instead of MLOPS_ALERT_SMTP_*"),
    "MLOPS_ALERT_SMTP_HOST": ("localhost", "SMTP server for alert emails"),
    "MLOPS_ALERT_SMTP_PORT": ("<587; 465 with ssl; 25 with none>", "SMTP port"),
    "MLOPS_ALERT_SMTP_TLS": ("starttls", "SMTP transport security: starttls, ssl or none"),
    "MLOPS_ALERT_SMTP_USER": ("", "SMTP login (empty: no login)"),
    "MLOPS_ALERT_SMTP_PASSWORD": ("", "SMTP password (a secret)"),
    "MLOPS_ALERT_SMTP_FROM": ("mlops-loop@localhost", "sender address of alert emails"),
    "MLOPS_ALERT_TIMEOUT_SECONDS": ("5", "timeout of one delivery attempt (HTTP request or SMTP session)"),
    "MLOPS_ALERT_RETRIES": (
        "2",
        "extra attempts after a failed delivery attempt (refused connection, HTTP 429/5xx, SMTP 4xx; not a timeout)",
    ),
    "MLOPS_ALERT_AIRFLOW_URL": ("http://<host>:<airflow port>", "Airflow UI base URL for links in alerts (the public URL behind a proxy)"),
}


ALERT_SEVERITIES = ("info", "warning", "critical")
_SMTP_DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}


@dataclass(frozen=True)
class AlertSettings:
    """Alert delivery channels and rules; secrets are kept out of ``repr``."""

    min_severity: str = "warning"
    cooloff_minutes: float = 360.0
    webhook_url: str | None = field(default=None, repr=False)
    webhook_conn_id: str | None = None
    slack_webhook_url: str | None = field(default=None, repr=False)
    slack_conn_id: str | None = None
    email_to: tuple[str, ...] = ()
    smtp_conn_id: str | None = None
    smtp_host: str = "localhost"
    smtp_port: int = 587
    smtp_tls: str = "starttls"
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_from: str = "mlops-loop@localhost"
    timeout_seconds: float = 5.0
    retries: int = 2
    airflow_url: str = "http://127.0.0.1:8080"


@dataclass(frozen=True)
class Settings:
    """A snapshot of the deployment settings."""

    project_root: Path
    home: Path
    spec_path: Path
    model_name_override: str | None
    host: str
    airflow_port: int
    mlflow_port: int
    serving_port: int
    evidently_port: int
    ops_db_url: str
    lake: Path
    evidently_workspace: Path
    mlflow_tracking_uri: str
    serving_url: str
    log_level: str
    serving_workers: int = 1
    serving_poll_seconds: float = 2.0
    serving_max_body_bytes: int = 1 << 20
    serving_max_rows: int = 1000
    serving_batch_wait_ms: float = 3.0
    alerts: AlertSettings = field(default_factory=AlertSettings)

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def airflow_url(self) -> str:
        return f"http://{self.host}:{self.airflow_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def evidently_url(self) -> str:
        return f"http://{self.host}:{self.evidently_port}"


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer port number, got {raw!r}") from None
    if not 0 < value < 65536:
        raise ValueError(f"{name} must be between 1 and 65535, got {value}")
    return value


def _positive(env: dict[str, str], name: str, default: float, kind: type[int] | type[float]) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be a positive {'integer' if kind is int else 'number'}, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be greater than 0, got {raw!r}")
    return value


def _non_negative(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {raw!r}")
    return value


def _path(value: str | None, default: Path) -> Path:
    """A path setting: relative paths are relative to the project root, not the working directory."""
    p = Path(value).expanduser() if value else default
    return (p if p.is_absolute() else PROJECT_ROOT / p).resolve()


def _alert_settings(env: dict[str, str], host: str) -> AlertSettings:
    """The alert-delivery settings; a bad value is a clear error (never echoing a secret)."""

    def text(name: str) -> str | None:
        return (env.get(name) or "").strip() or None

    def number(name: str, default: float, minimum: float) -> float:
        raw = text(name)
        try:
            value = float(raw) if raw is not None else default
        except ValueError:
            raise ValueError(f"{name} must be a number, got {raw!r}") from None
        if value < minimum:
            raise ValueError(f"{name} must be at least {minimum:g}, got {raw!r}")
        return value

    def url(name: str) -> str | None:
        value = text(name)
        if value is not None and not value.lower().startswith(("http://", "https://")):
            raise ValueError(f"{name} must be an http:// or https:// URL")
        return value

    severity = (text("MLOPS_ALERT_MIN_SEVERITY") or "warning").lower()
    if severity not in ALERT_SEVERITIES:
        raise ValueError(f"MLOPS_ALERT_MIN_SEVERITY must be one of {', '.join(ALERT_SEVERITIES)}, got {severity!r}")
    tls = (text("MLOPS_ALERT_SMTP_TLS") or "starttls").lower()
    if tls not in _SMTP_DEFAULT_PORTS:
        raise ValueError(f"MLOPS_ALERT_SMTP_TLS must be one of {', '.join(_SMTP_DEFAULT_PORTS)}, got {tls!r}")
    retries = number("MLOPS_ALERT_RETRIES", 2, 0)
    if retries != int(retries):
        raise ValueError(f"MLOPS_ALERT_RETRIES must be a whole number, got {text('MLOPS_ALERT_RETRIES')!r}")
    recipients = (text("MLOPS_ALERT_EMAIL_TO") or "").replace(";", ",").split(",")
    return AlertSettings(
        min_severity=severity,
        cooloff_minutes=number("MLOPS_ALERT_COOLOFF_MINUTES", 360.0, 0),
        webhook_url=url("MLOPS_ALERT_WEBHOOK_URL"),
        webhook_conn_id=text("MLOPS_ALERT_WEBHOOK_CONN_ID"),
        slack_webhook_url=url("MLOPS_ALERT_SLACK_WEBHOOK_URL"),
        slack_conn_id=text("MLOPS_ALERT_SLACK_CONN_ID"),
        email_to=tuple(r.strip() for r in recipients if r.strip()),
        smtp_conn_id=text("MLOPS_ALERT_SMTP_CONN_ID"),
        smtp_host=text("MLOPS_ALERT_SMTP_HOST") or "localhost",
        smtp_port=_int(env, "MLOPS_ALERT_SMTP_PORT", _SMTP_DEFAULT_PORTS[tls]),
        smtp_tls=tls,
        smtp_user=text("MLOPS_ALERT_SMTP_USER"),
        smtp_password=env.get("MLOPS_ALERT_SMTP_PASSWORD") or None,
        smtp_from=text("MLOPS_ALERT_SMTP_FROM") or "mlops-loop@localhost",
        timeout_seconds=number("MLOPS_ALERT_TIMEOUT_SECONDS", 5.0, 0.1),
        retries=int(retries),
        airflow_url=(text("MLOPS_ALERT_AIRFLOW_URL") or f"http://{host}:{_int(env, 'MLOPS_AIRFLOW_PORT', 8080)}").rstrip("/"),
    )


def get_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read the settings from ``environ`` (default: the process environment)."""
    env = dict(os.environ if environ is None else environ)
    home = _path(env.get("MLOPS_HOME"), PROJECT_ROOT / ".local")
    host = env.get("MLOPS_HOST") or "127.0.0.1"
    mlflow_port = _int(env, "MLOPS_MLFLOW_PORT", 5000)
    serving_port = _int(env, "MLOPS_SERVING_PORT", 8000)
    return Settings(
        project_root=PROJECT_ROOT,
        home=home,
        spec_path=_path(env.get("MLOPS_SPEC"), PROJECT_ROOT / "include/specs/flights.yaml"),
        model_name_override=env.get("MLOPS_MODEL_NAME") or None,
        host=host,
        airflow_port=_int(env, "MLOPS_AIRFLOW_PORT", 8080),
        mlflow_port=mlflow_port,
        serving_port=serving_port,
        evidently_port=_int(env, "MLOPS_EVIDENTLY_PORT", 8001),
        ops_db_url=env.get("MLOPS_OPS_DB_URL") or f"sqlite:///{home / 'ops.db'}",
        lake=_path(env.get("MLOPS_LAKE"), home / "lake"),
        evidently_workspace=_path(env.get("MLOPS_EVIDENTLY_WORKSPACE"), home / "evidently"),
        mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or f"http://{host}:{mlflow_port}",
        serving_url=env.get("MLOPS_SERVING_URL") or f"http://{host}:{serving_port}",
        log_level=(env.get("MLOPS_LOG_LEVEL") or "INFO").upper(),
        serving_workers=int(_positive(env, "MLOPS_SERVING_WORKERS", 1, int)),
        serving_poll_seconds=float(_positive(env, "MLOPS_SERVING_POLL_SECONDS", 2.0, float)),
        serving_max_body_bytes=int(_positive(env, "MLOPS_SERVING_MAX_BODY_BYTES", 1 << 20, int)),
        serving_max_rows=int(_positive(env, "MLOPS_SERVING_MAX_ROWS", 1000, int)),
        serving_batch_wait_ms=_non_negative(env, "MLOPS_SERVING_BATCH_WAIT_MS", 3.0),
        alerts=_alert_settings(env, host),
    )
