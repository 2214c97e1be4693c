"""How alerts reach people: the generic webhook and Slack (JSON over HTTP) and email (SMTP), their
targets from the environment or an Airflow connection, bounded retries and a per-destination breaker
for endpoints that time out. Every failure is a :class:`DeliveryError`."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from include.mlops.settings import AlertSettings

#: A destination whose attempt timed out is skipped (its alerts stay pending) for this long in this
#: process, so a black-holed endpoint costs one timeout a minute, not one per alert.
BREAKER_SECONDS = 60.0
_timed_out_until: dict[str, float] = {}
_USER_AGENT = "mlops-loop-alerts/1"


class DeliveryError(Exception):
    """A channel did not take an alert (after its retries), or is misconfigured."""


@dataclass(frozen=True)
class HttpTarget:
    """Where a webhook posts: URL (a secret for Slack), extra headers, optional basic auth."""

    url: str = field(repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    auth: tuple[str, str] | None = field(default=None, repr=False)


def _airflow_connection(conn_id: str) -> Any:
    """An Airflow connection: inside a task through the task SDK, elsewhere from Airflow's secrets
    backends (``AIRFLOW_CONN_<ID>`` environment variables, ...)."""
    try:
        from airflow.sdk import Connection
    except ImportError as exc:  # pragma: no cover - Airflow is installed wherever the loop runs
        raise DeliveryError(f"Airflow connection {conn_id!r} is configured, but Airflow is not importable here") from exc
    try:
        return Connection.get(conn_id)
    except Exception as exc:
        raise DeliveryError(f"Airflow connection {conn_id!r}: {exc}") from exc


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))


def webhook_target(s: AlertSettings) -> HttpTarget:
    """The generic webhook: ``MLOPS_ALERT_WEBHOOK_CONN_ID`` (URL in the connection's ``host`` or
    ``extra.url``; login/password as basic auth; ``extra.headers``), else ``MLOPS_ALERT_WEBHOOK_URL``."""
    if not s.webhook_conn_id:
        if not s.webhook_url:
            raise DeliveryError("no webhook URL configured")
        return HttpTarget(s.webhook_url)
    conn = _airflow_connection(s.webhook_conn_id)
    extra = conn.extra_dejson or {}
    url = extra.get("url") if _is_url(extra.get("url")) else conn.host if _is_url(conn.host) else None
    if not url:
        raise DeliveryError(f"Airflow connection {s.webhook_conn_id!r} has no webhook URL: put the full URL in its host or extra.url")
    headers = {str(k): str(v) for k, v in (extra.get("headers") or {}).items()}
    auth = (str(conn.login), str(conn.password or "")) if conn.login else None
    return HttpTarget(str(url), headers, auth)


def slack_target(s: AlertSettings) -> HttpTarget:
    """The Slack webhook: ``MLOPS_ALERT_SLACK_CONN_ID`` in the Slack provider's ``slackwebhook`` format
    (password = the webhook URL, or its token with host = ``https://hooks.slack.com/services``;
    or the URL in ``extra.url``), else ``MLOPS_ALERT_SLACK_WEBHOOK_URL``."""
    if not s.slack_conn_id:
        if not s.slack_webhook_url:
            raise DeliveryError("no Slack webhook URL configured")
        return HttpTarget(s.slack_webhook_url)
    conn = _airflow_connection(s.slack_conn_id)
    extra = conn.extra_dejson or {}
    password = str(conn.password or "")
    if _is_url(extra.get("url")):
        return HttpTarget(str(extra["url"]))
    if _is_url(password):
        return HttpTarget(password)
    if password:
        base = str(conn.host) if _is_url(conn.host) else "https://hooks.slack.com/services"
        return HttpTarget(f"{base.rstrip('/')}/{password.lstrip('/')}")
    raise DeliveryError(f"Airflow connection {s.slack_conn_id!r} has no Slack webhook: put the URL or token in its password")


def _backoff(attempt: int) -> float:
    return float(min(0.5 * 2 ** (attempt - 1), 4.0))


def _check_breaker(key: str) -> None:
    until = _timed_out_until.get(key)
    if until is not None and time.monotonic() < until:
        raise DeliveryError(f"skipped: it timed out less than {BREAKER_SECONDS:g} s ago")


def _trip_breaker(key: str) -> None:
    _timed_out_until[key] = time.monotonic() + BREAKER_SECONDS


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError)


def post_json(target: HttpTarget, body: Mapping[str, Any], s: AlertSettings, *, headers: Mapping[str, str] | None = None) -> None:
    """POST ``body`` as JSON, each attempt bounded by the timeout; retries refused or reset connections,
    429 and 5xx (``MLOPS_ALERT_RETRIES`` times), never another 4xx; a timeout is not retried and trips
    the breaker (:data:`BREAKER_SECONDS`). Raises :class:`DeliveryError`.

    urllib rather than httpx: httpx logs every request URL at INFO, and a Slack webhook URL is a secret.
    """
    import base64
    import urllib.error
    import urllib.request

    all_headers = {"Content-Type": "application/json", "User-Agent": _USER_AGENT, **target.headers, **(headers or {})}
    if target.auth:
        all_headers["Authorization"] = "Basic " + base64.b64encode(":".join(target.auth).encode()).decode()
    if not _is_url(target.url):
        raise DeliveryError("the webhook URL must be http:// or https://")
    breaker = f"http:{target.url}"
    _check_breaker(breaker)
    content = json.dumps(body, default=str).encode()
    problem = ""
    for attempt in range(s.retries + 1):
        if attempt:
            time.sleep(_backoff(attempt))
        request = urllib.request.Request(target.url, data=content, headers=all_headers, method="POST")  # noqa: S310 - http(s) checked above
        try:
            with urllib.request.urlopen(request, timeout=s.timeout_seconds) as response:  # noqa: S310
                response.read()
            return
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code} {exc.read()[:200]!r}"
            if exc.code != 429 and exc.code < 500:
                break
        except (urllib.error.URLError, OSError) as exc:  # refused, reset, timed out
            problem = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            if _is_timeout(exc):
                _trip_breaker(breaker)
                break
    raise DeliveryError(problem)


@dataclass(frozen=True)
class SmtpServer:
    """Where alert emails go; ``tls`` is ``starttls``, ``ssl`` or ``none``."""

    host: str
    port: int
    tls: str
    user: str | None
    password: str | None = field(repr=False)
    sender: str


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def smtp_server(s: AlertSettings) -> SmtpServer:
    """``MLOPS_ALERT_SMTP_CONN_ID`` (the SMTP provider's connection: host, port, login, password,
    ``extra.from_email``, ``extra.disable_ssl``, ``extra.disable_tls``), else ``MLOPS_ALERT_SMTP_*``."""
    if not s.smtp_conn_id:
        return SmtpServer(s.smtp_host, s.smtp_port, s.smtp_tls, s.smtp_user, s.smtp_password, s.smtp_from)
    conn = _airflow_connection(s.smtp_conn_id)
    extra = conn.extra_dejson or {}
    tls = "ssl" if not _truthy(extra.get("disable_ssl", False)) else "none" if _truthy(extra.get("disable_tls", False)) else "starttls"
    port = int(conn.port or {"ssl": 465, "starttls": 587, "none": 25}[tls])
    return SmtpServer(
        str(conn.host or "localhost"), port, tls, conn.login or None, conn.password or None, str(extra.get("from_email") or s.smtp_from)
    )


def send_email(server: SmtpServer, msg: EmailMessage, s: AlertSettings) -> None:
    """Send over SMTP with the alert timeout; retries connection problems and 4xx replies, not 5xx
    (refused recipient, failed login) nor a timeout (trips the breaker). Raises :class:`DeliveryError`."""
    import smtplib
    import ssl

    breaker = f"smtp:{server.host}:{server.port}"
    _check_breaker(breaker)
    problem = ""
    for attempt in range(s.retries + 1):
        if attempt:
            time.sleep(_backoff(attempt))
        try:
            client: smtplib.SMTP
            if server.tls == "ssl":
                client = smtplib.SMTP_SSL(server.host, server.port, timeout=s.timeout_seconds, context=ssl.create_default_context())
            else:
                client = smtplib.SMTP(server.host, server.port, timeout=s.timeout_seconds)
            with client:
                if server.tls == "starttls":
                    client.starttls(context=ssl.create_default_context())
                if server.user:
                    client.login(server.user, server.password or "")
                client.send_message(msg)
            return
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"SMTP {server.host}:{server.port} refused {sorted(exc.recipients)}") from exc
        except smtplib.SMTPResponseException as exc:
            problem = f"SMTP {server.host}:{server.port}: {exc.smtp_code} {exc.smtp_error!r}"
            if exc.smtp_code >= 500:
                break
        except OSError as exc:  # refused, disconnected, timed out (smtplib's own errors are OSErrors too)
            problem = f"SMTP {server.host}:{server.port}: {type(exc).__name__}: {exc}"
            if _is_timeout(exc):
                _trip_breaker(breaker)
                break
    raise DeliveryError(problem)
