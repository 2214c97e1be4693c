"""docker-compose.yaml and the Astro files, checked statically (no Docker engine on these machines).

* the compose file validates against the Compose Specification's JSON schema (the copy vendored in
  check-jsonschema, so no network);
* every service of the local stack (tooling/stack.py, the processes the tests run) has a
  compose counterpart running the same program with the same subcommand and flags (host, port and
  paths may differ), and Airflow gets the same configuration, except where a reason is written below;
* published ports are on 127.0.0.1; every long-running service has a health check and a restart
  policy; no secret is written in the file (only `${VAR}` references, documented in .env.example);
* the nginx proxy's upstream is the serving service; the images match the lock;
* least privilege: each store has its own PostgreSQL role (none uses the superuser), the serving
  replicas hold a role limited to the inference-log tables, a read-only MLflow user and no alert
  secret, sit on internal networks that reach PostgreSQL and MLflow only, and keep their journal on
  a volume (tests/integration/test_compose_roles.py runs the roles' SQL on a real PostgreSQL).

Each checker is a plain function, and the ``test_*_catches_*`` tests feed it a broken copy, so a
check that stopped looking would fail too.
"""

from __future__ import annotations

import copy
import importlib.resources
import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from include.mlops.settings import VARIABLES, get_settings
from tooling import postgres
from tooling import stack as local_stack

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"


def _load_generate_env():
    spec = importlib.util.spec_from_file_location("generate_env", ROOT / "deploy" / "generate_env.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate_env = _load_generate_env()

#: What compose would see in .env: a stand-in for every required secret, nothing else.
TEST_ENV = {name: f"test-{name.lower()}" for name in generate_env.REQUIRED}

#: Services only the scaled-out shape has (the local stack runs none of them).
COMPOSE_ONLY = {
    "redis": "Celery's broker; the local stack runs Airflow's LocalExecutor",
    "airflow-worker": "the Celery worker that runs tasks; locally the scheduler's LocalExecutor does",
    "airflow-init": "`airflow db migrate` (the local stack runs it in `up`) and the FAB admin user",
    "minio": "S3-compatible artifact store; the local MLflow keeps artifacts in a folder",
    "minio-init": "creates MLflow's bucket and its MinIO user",
    "mlflow-init": "MLflow's read-only user of the serving replicas (the local MLflow has no login)",
    "serving-proxy": "one port in front of the serving replicas; locally one serving process owns the port",
}

#: One-shot jobs: they run to completion, everything else runs until stopped.
ONE_SHOT = {"airflow-init", "minio-init", "mlflow-init"}

#: Flags that name where a service listens or keeps its data: their values differ by design.
DEPLOYMENT_SPECIFIC_FLAGS = {"--host", "--port", "--artifacts-destination", "--workspace", "-D", "-h", "-p", "-k"}

#: Flags of the local command that the compose service does not pass, and why.
FLAG_MISSING = {
    "postgres": {
        "-D": "the image's PGDATA, on the postgres-data volume",
        "-h": "the image listens on the compose network (listen_addresses='*'), published nowhere",
        "-p": "PostgreSQL's default port 5432, inside the network",
        "-k": "the image's own socket folder inside the container",
    },
}

#: Flags only the compose service passes, and why.
FLAG_EXTRA = {
    "mlflow": {
        "--app-name": "basic-auth: every MLflow request needs a login in compose",
        "--allowed-hosts": "the server is reached as mlflow:5000 inside the network, not only on loopback",
    },
}

#: Flags whose value is read from the environment, locally and in compose (checked to be set in both,
#: and absent from both command lines): the password stays out of `ps`, the logs and the pid files.
FLAG_FROM_ENV = {("mlflow", "--backend-store-uri"): "MLFLOW_BACKEND_STORE_URI"}

#: Keys of the local stack's environment (stack.base_env, which includes airflow_env) that the
#: compose Airflow services do not set, and why.
AIRFLOW_ENV_MISSING = {
    "PATH": "the image's PATH already finds airflow, mlflow and uvicorn",
    "AIRFLOW__SCHEDULER__MP_START_METHOD": (
        "the LocalExecutor's forkserver (tasks start without re-importing the libraries); in compose tasks run on the Celery worker"
    ),
    "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD": "what that forkserver imports once: LocalExecutor only",
}

#: Keys compose sets to another value than the local stack, and why (host/port/path keys are
#: compared structurally in test_airflow_env_points_at_the_compose_services instead).
AIRFLOW_ENV_DIFFERS = {
    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor: tasks run on airflow-worker containers (the local stack: LocalExecutor)",
    "AIRFLOW__CORE__AUTH_MANAGER": "the FAB auth manager: real users, the admin from .env (the local stack: the simple auth manager)",
    "AIRFLOW__API__WORKERS": "two API server workers: the UI, the REST API and every Celery task's execution API share them",
}

#: Keys whose value is a location (host, port, path, URL), compared structurally.
LOCATION_KEYS = {
    "AIRFLOW_HOME",
    "AIRFLOW__CORE__DAGS_FOLDER",
    "AIRFLOW__CORE__PLUGINS_FOLDER",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__API__HOST",
    "AIRFLOW__API__PORT",
    "AIRFLOW__API__BASE_URL",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "PYTHONPATH",
    "MLOPS_HOME",
    "MLFLOW_TRACKING_URI",
    "MLOPS_SERVING_URL",
    "MLOPS_SERVING_ADMIN_TOKEN",  # a secret: a reference to .env, checked in the secret tests
}


#: Each database's own role and the .env variable of its password (deploy/postgres/initdb/).
DB_ROLES = {"airflow": "airflow", "mlflow": "mlflow", "ops": "ops"}
DB_PASSWORDS = {"airflow": "AIRFLOW_DB_PASSWORD", "mlflow": "MLFLOW_DB_PASSWORD", "ops": "OPS_DB_PASSWORD"}
#: The serving replicas' ops-store role (deploy/postgres/ops_store_init.py grants it its tables).
SERVING_DB_ROLE = "ops_serving"


# -- helpers ---------------------------------------------------------------------------------------
def load_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def strings_of(doc: object) -> str:
    """Every string of the loaded file (keys and values; comments are not strings), one a line."""
    if isinstance(doc, dict):
        return "\n".join(strings_of(k) + "\n" + strings_of(v) for k, v in doc.items())
    if isinstance(doc, list):
        return "\n".join(strings_of(v) for v in doc)
    return doc if isinstance(doc, str) else ""


def interpolate(value: object, env: dict[str, str]) -> object:
    """Compose's variable interpolation (`$$`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
    `${VAR:?error}`, `${VAR?error}`, nested defaults), applied to every string in ``value``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("${", i):
            end, depth = i + 2, 1
            while depth:
                depth += 1 if value[end] == "{" else -1 if value[end] == "}" else 0
                end += 1
            out.append(_substitute(value[i + 2 : end - 1], env))
            i = end
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _substitute(expr: str, env: dict[str, str]) -> str:
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])(.*))?$", expr, flags=re.S)
    assert m, f"not a compose variable: ${{{expr}}}"
    name, op, rest = m.group(1), m.group(2), m.group(3) or ""
    value = env.get(name)
    unset = value is None or (op is not None and op.startswith(":") and value == "")
    if op in (":-", "-") and unset:
        return str(interpolate(rest, env))
    if op in (":?", "?") and unset:
        raise KeyError(f"{name} is required: {rest}")
    return value or ""


def variable_references(text: str) -> list[tuple[str, str | None, str]]:
    """Every `${NAME<op><rest>}` in ``text`` (outer references and nested ones): (name, op, rest)."""
    refs = []
    for m in re.finditer(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?])?([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}", text):
        refs.append((m.group(1), m.group(2), m.group(3)))
        refs.extend(variable_references(m.group(3)))
    return refs


def parse_command(argv: list[str]) -> tuple[str, tuple[str, ...], dict[str, list[str | None]]]:
    """(program name, positional words before the first flag, {flag: [values]})."""
    program, rest = Path(argv[0]).name, list(argv[1:])
    positionals = []
    while rest and not rest[0].startswith("-"):
        positionals.append(rest.pop(0))
    flags: dict[str, list[str | None]] = {}
    while rest:
        flag = rest.pop(0)
        assert flag.startswith("-"), f"positional {flag!r} after the flags of {argv}"
        value = rest.pop(0) if rest and not rest[0].startswith("-") else None
        flags.setdefault(flag, []).append(value)
    return program, tuple(positionals), flags


def command_differences(service: str, local_argv: list[str], compose_argv: list[str]) -> list[str]:
    """How the compose command differs from the local one beyond what is allowed and explained."""
    lp, lpos, lflags = parse_command(local_argv)
    cp, cpos, cflags = parse_command(compose_argv)
    problems = []
    if lp != cp:
        problems.append(f"program {cp!r} instead of {lp!r}")
    if lpos != cpos:
        problems.append(f"arguments {cpos} instead of {lpos}")
    missing, extra = set(lflags) - set(cflags), set(cflags) - set(lflags)
    allowed_missing, allowed_extra = FLAG_MISSING.get(service, {}), FLAG_EXTRA.get(service, {})
    problems += [f"lacks {f} (local: {lflags[f]})" for f in sorted(missing - set(allowed_missing))]
    problems += [f"adds {f} {cflags[f]}" for f in sorted(extra - set(allowed_extra))]
    problems += [f"FLAG_MISSING lists {f}, which it passes" for f in sorted(set(allowed_missing) - missing)]
    problems += [f"FLAG_EXTRA lists {f}, which the local stack passes too" for f in sorted(set(allowed_extra) - extra)]
    for flag in sorted(set(lflags) & set(cflags) - DEPLOYMENT_SPECIFIC_FLAGS):
        if sorted(lflags[flag], key=str) != sorted(cflags[flag], key=str):
            problems.append(f"{flag} {cflags[flag]} instead of {lflags[flag]}")
    return problems


def published_ports(service: dict) -> list[tuple[str | None, str, str]]:
    """(host ip, host port, container port) of every published port, short or long syntax."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((port.get("host_ip"), str(port.get("published", "")), str(port.get("target"))))
            continue
        parts = str(port).split("/")[0].split(":")
        if len(parts) == 3:
            out.append((parts[0], parts[1], parts[2]))
        elif len(parts) == 2:
            out.append((None, parts[0], parts[1]))
        else:
            out.append((None, "", parts[0]))
    return out


def ports_not_on_loopback(compose: dict) -> list[str]:
    return [
        f"{name}: {ip or '(all interfaces)'}:{host}:{target}"
        for name, svc in compose["services"].items()
        for ip, host, target in published_ports(svc)
        if ip != "127.0.0.1"
    ]


def lifecycle_problems(compose: dict) -> list[str]:
    services, problems = compose["services"], []
    for name, svc in services.items():
        if name in ONE_SHOT:
            if svc.get("restart") not in ("no", "on-failure"):
                problems.append(f"{name}: a one-shot job must not restart forever")
            if svc.get("ports"):
                problems.append(f"{name}: a one-shot job publishes no port")
            continue
        if not (svc.get("healthcheck") or {}).get("test"):
            problems.append(f"{name}: no health check")
        if svc.get("restart") != "unless-stopped":
            problems.append(f"{name}: restart is {svc.get('restart')!r}, not 'unless-stopped'")
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            condition = cond.get("condition") if isinstance(cond, dict) else None
            if dep not in services:
                problems.append(f"{name} depends on unknown service {dep}")
            elif condition == "service_healthy" and not (services[dep].get("healthcheck") or {}).get("test"):
                problems.append(f"{name} waits for {dep} to be healthy, but {dep} has no health check")
            elif condition == "service_completed_successfully" and dep not in ONE_SHOT:
                problems.append(f"{name} waits for {dep} to complete, but {dep} runs until stopped")
    return problems


SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|API_KEY$")


def secret_problems(compose: dict, text: str) -> list[str]:
    """Literal secrets: a secret-named setting not taken from .env, a secret variable with a default,
    or a URL whose password is not a reference."""
    problems = []
    for name, svc in compose["services"].items():
        env = svc.get("environment") or {}
        assert isinstance(env, dict), f"{name}: environment as a mapping, please"
        for key, value in env.items():
            if SECRET_NAME.search(key) and not re.fullmatch(r"\$\{[A-Z0-9_]+:?[-?][^}]*\}", str(value)):
                problems.append(f"{name}: {key} is not read from .env")
    for var, op, rest in variable_references(text):
        if SECRET_NAME.search(var) and op in (":-", "-") and rest:
            problems.append(f"${{{var}}} has a default value: a secret must come from .env")
    for m in re.finditer(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]*:(\$\{[^}]*\}|[^@\s/]+)@", text):
        if not m.group(1).startswith("${"):
            problems.append(f"a URL carries a literal password: {m.group(0)[:40]}")
    return problems


def airflow_services(compose: dict) -> list[str]:
    return [name for name in compose["services"] if name.startswith("airflow-")]


def compose_env(service: str) -> dict[str, str]:
    return interpolate(load_compose()["services"][service].get("environment") or {}, TEST_ENV)


def local_services(monkeypatch, tmp_path) -> dict[str, local_stack.Service]:
    """The local stack's services with the PostgreSQL backend (the shape compose has)."""
    monkeypatch.setattr(postgres, "pg_bin", lambda name: f"/usr/lib/postgresql/15/bin/{name}")
    monkeypatch.setattr(postgres, "run_as_prefix", lambda: [])
    s = get_settings({"MLOPS_HOME": str(tmp_path), "MLOPS_BACKEND": "postgres", "MLOPS_POSTGRES_PASSWORD": "pw"})
    return {svc.name: svc for svc in local_stack.services(s)}


# -- (a) the Compose Specification -----------------------------------------------------------------
def compose_schema_errors(doc: dict) -> list[str]:
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema, format_checker=jsonschema.FormatChecker())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_compose_file_is_valid_against_the_compose_specification():
    assert compose_schema_errors(load_compose()) == []


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d["services"]["mlflow"].update(restart_policy="always"),  # not a Compose key
        lambda d: d["services"]["serving"].update(ports=8000),  # ports is a list
        lambda d: d["services"]["postgres"]["healthcheck"].update(test={"cmd": "pg_isready"}),
        lambda d: d.update(service={}),  # a typo at the top level
    ],
    ids=["unknown-key", "ports-not-a-list", "healthcheck-test-mapping", "top-level-typo"],
)
def test_schema_check_catches_a_broken_file(break_it):
    doc = copy.deepcopy(load_compose())
    break_it(doc)
    assert compose_schema_errors(doc)


# -- (b) the same programs as the local stack --------------------------------------------------------
def test_every_local_service_runs_the_same_program_in_compose(monkeypatch, tmp_path):
    compose = interpolate(load_compose(), TEST_ENV)["services"]
    local = local_services(monkeypatch, tmp_path)
    assert set(local) == {
        "postgres",
        "mlflow",
        "serving",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "evidently-ui",
    }
    problems = []
    for name, svc in local.items():
        assert name in compose, f"the local stack's {name} has no compose service"
        problems += [f"{name}: {p}" for p in command_differences(name, svc.command, compose[name]["command"])]
    assert problems == []
    for (service, flag), var in FLAG_FROM_ENV.items():
        assert compose[service]["environment"].get(var), f"{service} should get {flag} from {var}"
        assert local[service].env.get(var), f"the local {service} should get {flag} from {var}"
        assert flag not in compose[service]["command"] and flag not in local[service].command


def test_command_comparison_catches_a_changed_command(monkeypatch, tmp_path):
    local = local_services(monkeypatch, tmp_path)
    compose = interpolate(load_compose(), TEST_ENV)["services"]
    scheduler = [a for a in compose["airflow-scheduler"]["command"] if a != "--skip-serve-logs"]
    assert command_differences("airflow-scheduler", local["airflow-scheduler"].command, scheduler) == [
        "lacks --skip-serve-logs (local: [None])"
    ]
    mlflow = list(compose["mlflow"]["command"])
    mlflow[mlflow.index("--workers") + 1] = "4"
    assert command_differences("mlflow", local["mlflow"].command, mlflow) == ["--workers ['4'] instead of ['2']"]
    assert "program 'gunicorn' instead of 'uvicorn'" in command_differences("serving", local["serving"].command, ["gunicorn"])
    assert "arguments ('server',) instead of ('ui',)" in command_differences(
        "evidently-ui", local["evidently-ui"].command, ["evidently", "server"]
    )


def test_services_only_compose_has_are_explained():
    compose = set(load_compose()["services"])
    local = {
        "postgres",
        "mlflow",
        "serving",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "evidently-ui",
    }
    assert compose - local == set(COMPOSE_ONLY)


def test_airflow_init_does_what_make_up_does_before_airflow_starts():
    init = (ROOT / "deploy" / "airflow" / "init.sh").read_text()
    assert "airflow db migrate" in init  # stack._migrate_airflow
    # the admin user, its password read from the environment, never on a command line
    assert 'os.environ["AIRFLOW_ADMIN_PASSWORD"]' in init and "sm.add_user(" in init
    assert "--password" not in init and '"$AIRFLOW_ADMIN_PASSWORD"' not in init
    compose = load_compose()["services"]
    assert "/opt/mlops-deploy/airflow-init.sh" in compose["airflow-init"]["command"]
    mounts = [v.split(":") for v in compose["airflow-init"]["volumes"]]
    assert ["./deploy/airflow/init.sh", "/opt/mlops-deploy/airflow-init.sh", "ro"] in mounts


@pytest.mark.parametrize("script, shell", [("deploy/airflow/init.sh", "bash"), ("deploy/minio/init.sh", "sh")])
def test_init_scripts_are_valid_shell(script, shell):
    result = subprocess.run([shell, "-n", str(ROOT / script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def _local_env(monkeypatch, tmp_path) -> dict[str, str]:
    """What the local stack sets for its services (stack.base_env), without the caller's environment."""
    monkeypatch.setattr(os, "environ", {})
    s = get_settings(
        {"MLOPS_HOME": str(tmp_path), "MLOPS_BACKEND": "postgres", "MLOPS_POSTGRES_PASSWORD": "pw", "MLOPS_SERVING_ADMIN_TOKEN": "t"}
    )
    return local_stack.base_env(s)


@pytest.mark.parametrize(
    "service", ["airflow-init", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker"]
)
def test_airflow_gets_the_local_stacks_configuration(monkeypatch, tmp_path, service):
    local = _local_env(monkeypatch, tmp_path)
    env = compose_env(service)
    assert set(AIRFLOW_ENV_MISSING) <= set(local), "AIRFLOW_ENV_MISSING lists a key the local stack does not set"
    assert set(AIRFLOW_ENV_DIFFERS) <= set(local), "AIRFLOW_ENV_DIFFERS lists a key the local stack does not set"
    missing = sorted(set(local) - set(env) - set(AIRFLOW_ENV_MISSING))
    assert missing == [], f"{service} lacks {missing}"
    for key in sorted(set(local) & set(env) - LOCATION_KEYS):
        if key in AIRFLOW_ENV_DIFFERS:
            assert env[key] != local[key], f"AIRFLOW_ENV_DIFFERS lists {key}, which is the same"
        else:
            assert env[key] == local[key], f"{service}: {key}={env[key]!r}, the local stack sets {local[key]!r}"


def test_airflow_env_points_at_the_compose_services():
    compose = interpolate(load_compose(), TEST_ENV)["services"]
    env = compose["airflow-scheduler"]["environment"]
    _, _, api = parse_command(compose["airflow-api-server"]["command"])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["airflow-scheduler"]["volumes"]}
    assert mounts[env["AIRFLOW__CORE__DAGS_FOLDER"]] == "./dags"
    assert mounts[env["AIRFLOW__CORE__PLUGINS_FOLDER"]] == "./plugins"
    assert mounts[env["PYTHONPATH"] + "/include"] == "./include"  # `include` imports from PYTHONPATH
    assert mounts[env["MLOPS_HOME"]] == "state"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://airflow-api-server:{api['--port'][0]}/execution/"
    assert (env["AIRFLOW__API__HOST"], env["AIRFLOW__API__PORT"]) == (api["--host"][0], api["--port"][0])
    ((_, host_port, _),) = published_ports(compose["airflow-api-server"])
    assert env["AIRFLOW__API__BASE_URL"] == f"http://127.0.0.1:{host_port}"
    db = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert (db.scheme, db.hostname, db.port, db.path) == ("postgresql+psycopg2", "postgres", 5432, "/airflow")
    _, _, mlflow = parse_command(compose["mlflow"]["command"])
    assert env["MLFLOW_TRACKING_URI"] == f"http://mlflow:{mlflow['--port'][0]}"
    proxy_port = published_ports(compose["serving-proxy"])[0][2]
    assert env["MLOPS_SERVING_URL"] == f"http://serving-proxy:{proxy_port}"


def test_postgres_urls_name_the_locked_driver():
    """SQLAlchemy 2.1's default PostgreSQL driver is psycopg (3), which the lock does not have: a URL
    without the driver (`postgresql://`, or Celery's `db+postgresql://`) fails at connect time."""
    urls = re.findall(r"(?:db\+)?postgresql[^:]*://", strings_of(load_compose()))
    assert urls and set(urls) <= {"postgresql+psycopg2://", "db+postgresql+psycopg2://"}, set(urls)
    assert _locked("psycopg2-binary")


def test_components_that_call_the_execution_api_wait_for_the_api_server():
    services = load_compose()["services"]
    for name in ("airflow-worker", "airflow-triggerer", "airflow-dag-processor"):
        assert services[name]["depends_on"]["airflow-api-server"] == {"condition": "service_healthy"}, name


def test_every_store_is_on_the_compose_postgres():
    compose = interpolate(load_compose(), TEST_ENV)["services"]
    urls = {
        "ops": compose["airflow-worker"]["environment"]["MLOPS_OPS_DB_URL"],
        "airflow": compose["airflow-worker"]["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
        "mlflow": compose["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"],
    }
    for database, url in urls.items():
        parts = urlsplit(url)
        assert (parts.hostname, parts.path, parts.username) == ("postgres", f"/{database}", DB_ROLES[database]), url
        assert parts.password == TEST_ENV[DB_PASSWORDS[database]]
    sql = (ROOT / "deploy" / "postgres" / "initdb" / "10-databases.sql").read_text()
    created = re.search(r"CREATE DATABASE %I OWNER %I.*?FROM \(VALUES (.*?)\) AS d\(name\)", sql, flags=re.S)
    assert created and tuple(re.findall(r"'(\w+)'", created.group(1))) == postgres.DATABASES
    assert compose["postgres"]["environment"]["POSTGRES_USER"] == postgres.ROLE
    assert "./deploy/postgres/initdb:/docker-entrypoint-initdb.d:ro" in compose["postgres"]["volumes"]


def test_serving_gets_the_local_stacks_settings(monkeypatch, tmp_path):
    local = _local_env(monkeypatch, tmp_path)
    env = compose_env("serving")
    for key, value in local_stack.SERVING_MLFLOW_ENV.items():
        assert env[key] == value, key
    for key in ("PYTHONPATH", "MLOPS_HOME", "MLFLOW_TRACKING_URI", "MLOPS_SERVING_ADMIN_TOKEN", "GX_ANALYTICS_ENABLED", "DO_NOT_TRACK"):
        assert key in env and key in local, key
    serving_db, tasks_db = urlsplit(env["MLOPS_OPS_DB_URL"]), urlsplit(compose_env("airflow-worker")["MLOPS_OPS_DB_URL"])
    assert (serving_db.hostname, serving_db.port, serving_db.path) == (tasks_db.hostname, tasks_db.port, tasks_db.path)  # one inference log
    assert env["MLFLOW_TRACKING_USERNAME"] and env["MLFLOW_TRACKING_PASSWORD"] == TEST_ENV["MLFLOW_SERVING_PASSWORD"]


def test_every_loop_setting_compose_passes_is_a_setting():
    names = {k for svc in load_compose()["services"].values() for k in (svc.get("environment") or {}) if k.startswith("MLOPS_")}
    assert names - set(VARIABLES) == set()


# -- (c) loopback, health, restarts, secrets ------------------------------------------------------
def test_every_published_port_is_on_loopback():
    compose = interpolate(load_compose(), TEST_ENV)
    assert ports_not_on_loopback(compose) == []
    published = {name for name, svc in compose["services"].items() if svc.get("ports")}
    assert published == {"airflow-api-server", "mlflow", "serving-proxy", "evidently-ui", "minio"}


def test_loopback_check_catches_an_open_port():
    compose = {
        "services": {"a": {"ports": ["8080:8080"]}, "b": {"ports": ["0.0.0.0:1:1"]}, "c": {"ports": [{"target": 1, "published": 1}]}}
    }
    assert len(ports_not_on_loopback(compose)) == 3


def test_long_running_services_have_health_checks_and_restart():
    assert lifecycle_problems(load_compose()) == []


def test_lifecycle_check_catches_a_missing_health_check():
    compose = copy.deepcopy(load_compose())
    del compose["services"]["mlflow"]["healthcheck"]
    compose["services"]["redis"]["restart"] = "always"
    problems = lifecycle_problems(compose)
    assert "mlflow: no health check" in problems
    assert any(p.startswith("serving waits for mlflow to be healthy") for p in problems)
    assert "redis: restart is 'always', not 'unless-stopped'" in problems


def test_no_secret_is_written_in_the_compose_file():
    assert secret_problems(load_compose(), strings_of(load_compose())) == []


@pytest.mark.parametrize(
    "snippet",
    [
        "services:\n  db:\n    environment:\n      POSTGRES_PASSWORD: hunter2hunter2\n",
        "services:\n  db:\n    environment:\n      X: ${MINIO_ROOT_PASSWORD:-minioadmin}\n",
        "services:\n  db:\n    environment:\n      URL: postgresql://mlops:" + "abc12345@postgres/ops\n",  # split: no_secrets scan
    ],
    ids=["literal", "default", "url"],
)
def test_secret_check_catches_a_literal_secret(snippet):
    assert secret_problems(yaml.safe_load(snippet), snippet)


def _env_example() -> str:
    return (ROOT / ".env.example").read_text()


def test_every_compose_variable_is_documented_in_env_example():
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", _env_example(), flags=re.M))
    used = {name for name, _, _ in variable_references(strings_of(load_compose()))}
    assert used - documented == set()
    marker = _env_example().index("-- docker compose only")
    compose_only = used - set(VARIABLES) - {"AIRFLOW__CORE__PARALLELISM"}
    late = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", _env_example()[marker:], flags=re.M))
    assert compose_only - late == set(), "compose-only variables belong in the 'docker compose only' section at the end"


def test_required_variables_are_the_ones_generate_env_makes():
    required = {name for name, op, _ in variable_references(strings_of(load_compose())) if op in (":?", "?")}
    assert required == set(generate_env.REQUIRED)
    with pytest.raises(KeyError, match="AIRFLOW_JWT_SECRET"):
        interpolate(load_compose(), {k: v for k, v in TEST_ENV.items() if k != "AIRFLOW_JWT_SECRET"})


def test_generate_env_makes_url_safe_values_and_skips_what_is_set(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("REDIS_PASSWORD=already\n# MINIO_ROOT_PASSWORD=\nexport AIRFLOW_FERNET_KEY='x'\n")
    out = generate_env.render(generate_env.already_set(env_file))
    values = dict(line.split("=", 1) for line in out.splitlines() if line and not line.startswith("#"))
    assert set(values) == set(generate_env.REQUIRED) - {"REDIS_PASSWORD", "AIRFLOW_FERNET_KEY"}
    for name, value in values.items():
        assert re.fullmatch(r"[A-Za-z0-9_\-=]{16,}", value), name
    assert len(values["AIRFLOW_JWT_SECRET"]) >= 64
    fernet = generate_env._fernet_key()
    assert len(__import__("base64").urlsafe_b64decode(fernet)) == 32


# -- (d) the proxy in front of the serving replicas -----------------------------------------------
def nginx_upstreams(conf: str) -> dict[str, list[str]]:
    blocks = re.findall(r"upstream\s+(\S+)\s*\{([^}]*)\}", conf)
    return {name: re.findall(r"^\s*server\s+([^\s;]+)", body, flags=re.M) for name, body in blocks}


def test_proxy_sends_requests_to_the_serving_replicas():
    compose = interpolate(load_compose(), TEST_ENV)["services"]
    proxy = compose["serving-proxy"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in proxy["volumes"]}
    conf_path = mounts["/etc/nginx/conf.d/default.conf"]
    conf = (ROOT / conf_path).read_text()
    upstreams = nginx_upstreams(conf)
    (passed_to,) = re.findall(r"proxy_pass\s+http://([^/;\s]+)", conf)
    assert passed_to in upstreams
    (server,) = upstreams[passed_to]
    host, port = server.split(":")
    _, _, serving_flags = parse_command(compose["serving"]["command"])
    assert (host, port) == ("serving", serving_flags["--port"][0])  # the service name answers with every replica
    assert re.search(rf"server\s+{server}\s[^;]*\bresolve\b", conf), "re-resolve the service name (replicas come and go)"
    assert re.search(r"^\s*resolver\s+127\.0\.0\.11\b", conf, flags=re.M), "Docker's DNS resolves the replicas"
    (listen,) = re.findall(r"^\s*listen\s+(\d+);", conf, flags=re.M)
    assert published_ports(proxy)[0][2] == listen
    assert compose["serving"]["deploy"]["replicas"] >= 2 and not compose["serving"].get("ports")
    version = tuple(int(x) for x in re.match(r"nginx:(\d+)\.(\d+)", proxy["image"]).groups())
    assert version >= (1, 28), "the upstream `resolve` parameter is in open-source nginx from 1.27.3"


def test_upstream_parser_sees_a_wrong_target():
    assert nginx_upstreams("upstream u {\n  server mlflow:5000;\n}\n") == {"u": ["mlflow:5000"]}


# -- the images and the lock ---------------------------------------------------------------------------
def _locked(name: str) -> str:
    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line)
    return pins[name]


def test_compose_image_is_the_locked_airflow_with_every_package_compose_uses():
    airflow = _locked("apache-airflow")
    dockerfile = (ROOT / "deploy" / "airflow.Dockerfile").read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.M)
    assert base == f"apache/airflow:slim-{airflow}-python3.11"
    assert f"== '{airflow}'" in dockerfile and "pip install --no-cache-dir -r /tmp/requirements.txt" in dockerfile
    env = compose_env("airflow-scheduler")
    needs = {
        "apache-airflow-providers-celery": env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor",
        "apache-airflow-providers-fab": env["AIRFLOW__CORE__AUTH_MANAGER"].startswith("airflow.providers.fab."),
        "redis": env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://"),
        "boto3": "s3://" in " ".join(load_compose()["services"]["mlflow"]["command"]),
        "psycopg2-binary": env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://"),
    }
    for package, used in needs.items():
        assert used, f"the check for {package} no longer matches the compose file"
        assert _locked(package), package
    for name, svc in load_compose()["services"].items():
        if "build" in svc:
            assert svc["build"]["dockerfile"] == "deploy/airflow.Dockerfile", name


def test_astro_image_is_the_runtime_of_the_locked_airflow():
    airflow = _locked("apache-airflow")
    dockerfile = (ROOT / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.M)
    m = re.fullmatch(r"astrocrpublic\.azurecr\.io/runtime:(\d+\.\d+)-(\d+)-python-(\d+\.\d+)", base)
    assert m, base
    assert m.group(1) == ".".join(airflow.split(".")[:2])  # Runtime 3 tags: <Airflow major.minor>-<build>
    requires = re.search(r'requires-python = ">=(\d+\.\d+)', (ROOT / "pyproject.toml").read_text()).group(1)
    assert m.group(3) == requires
    assert f"== '{airflow}'" in dockerfile and "pip check" in dockerfile


def test_astro_project_files():
    assert yaml.safe_load((ROOT / ".astro" / "config.yaml").read_text())["project"]["name"] == "mlops-loop"
    assert (ROOT / "packages.txt").is_file()
    example = yaml.safe_load((ROOT / "airflow_settings.yaml.example").read_text())
    assert set(example["airflow"]) >= {"connections", "pools", "variables"}
    ignored = subprocess.run(["git", "check-ignore", "airflow_settings.yaml"], cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.strip() == "airflow_settings.yaml"
    dockerignore = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".local/", ".venv/", "airflow_settings.yaml", ".git"} <= set(dockerignore)


def test_mlflow_basic_auth_takes_its_secrets_from_the_environment():
    ini = (ROOT / "deploy" / "mlflow" / "basic_auth.ini").read_text()
    assert not re.search(r"^\s*admin_(password|username)\s*=", ini, flags=re.M)  # only from MLFLOW_AUTH_ADMIN_*
    env = compose_env("mlflow")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in load_compose()["services"]["mlflow"]["volumes"]}
    assert mounts[env["MLFLOW_AUTH_CONFIG_PATH"]] == "./deploy/mlflow/basic_auth.ini"
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == TEST_ENV["MLFLOW_ADMIN_PASSWORD"]
    assert parse_command(load_compose()["services"]["mlflow"]["command"])[2]["--app-name"] == ["basic-auth"]


# -- (e) least privilege: database roles, the serving replicas' credentials, networks ------------------
POSTGRES_URL = re.compile(r"postgresql\+psycopg2://([^:/@]+):([^@]*)@postgres:5432/(\w+)")


def database_logins(compose: dict) -> list[tuple[str, str, str]]:
    """(service, role, database) of every PostgreSQL URL in a service's environment."""
    return [
        (name, m.group(1), m.group(3))
        for name, svc in compose["services"].items()
        for value in (svc.get("environment") or {}).values()
        for m in POSTGRES_URL.finditer(str(value))
    ]


def superuser_logins(compose: dict) -> list[str]:
    return [f"{svc} logs in to {db} as the superuser" for svc, role, db in database_logins(compose) if role == postgres.ROLE]


def secrets_held(compose: dict, service: str) -> set[str]:
    """The .env secrets a service's environment is given."""
    env = compose["services"][service].get("environment") or {}
    return {var for var, _, _ in variable_references(strings_of(env)) if SECRET_NAME.search(var)}


def test_every_store_has_its_own_role_and_nobody_uses_the_superuser():
    compose = load_compose()
    assert superuser_logins(compose) == []
    logins = {(role, db) for _, role, db in database_logins(compose)}
    assert logins == {("airflow", "airflow"), ("mlflow", "mlflow"), ("ops", "ops"), (SERVING_DB_ROLE, "ops")}
    holders = {name for name in compose["services"] if "MLOPS_POSTGRES_PASSWORD" in secrets_held(compose, name)}
    assert holders == {"postgres"}  # the superuser's password: the init script only


def test_superuser_check_catches_a_service_logging_in_as_mlops():
    compose = copy.deepcopy(load_compose())
    compose["services"]["serving"]["environment"]["MLOPS_OPS_DB_URL"] = (
        "postgresql+psycopg2://mlops:${MLOPS_POSTGRES_PASSWORD:?x}@postgres:5432/ops"
    )
    assert superuser_logins(compose) == ["serving logs in to ops as the superuser"]


def test_the_init_sql_creates_the_roles_with_passwords_from_the_environment():
    sql = (ROOT / "deploy" / "postgres" / "initdb" / "10-databases.sql").read_text()
    roles = re.search(r"CREATE ROLE %I LOGIN PASSWORD %L.*?FROM \(VALUES (.*?)\) AS r\(name, password\)", sql, flags=re.S)
    assert roles, "the roles are created from a VALUES list"
    pairs = dict(re.findall(r"\('(\w+)', :'(\w+)'\)", roles.group(1)))
    assert set(pairs) == {*DB_ROLES.values(), SERVING_DB_ROLE}
    getenv = dict(re.findall(r"^\\getenv (\w+) (\w+)$", sql, flags=re.M))
    postgres_env = compose_env("postgres")
    for role, variable in pairs.items():
        env_var = getenv[variable]  # psql reads the password from the container's environment
        assert postgres_env[env_var] == TEST_ENV[env_var], role
    assert set(DB_PASSWORDS.values()) | {"SERVING_DB_PASSWORD"} == set(getenv.values())
    assert "REVOKE ALL ON DATABASE airflow, mlflow, ops FROM PUBLIC;" in sql
    assert f"GRANT CONNECT ON DATABASE ops TO {SERVING_DB_ROLE};" in sql
    assert not re.search(r"SUPERUSER|CREATEROLE|CREATEDB|BYPASSRLS", sql.split("\\gexec")[0].split("SELECT format")[1])


def _ops_store_init():
    spec = importlib.util.spec_from_file_location("ops_store_init", ROOT / "deploy" / "postgres" / "ops_store_init.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_serving_role_gets_the_inference_tables_only():
    from include.mlops.adapters.store.schema import metadata

    init = _ops_store_init()
    assert init.SERVING_ROLE == SERVING_DB_ROLE
    assert set(init.SERVING_GRANTS) <= set(metadata.tables) and set(init.SERVING_COLUMN_GRANTS) <= set(init.SERVING_GRANTS)
    assert set(init.SERVING_GRANTS) == {"schema_version", "inference_log", "log_journal", "model_digests"}
    for table in ("schema_version", "model_digests"):
        assert init.SERVING_GRANTS[table] == ("SELECT",), table  # read only
    statements = init.grant_statements()
    assert statements[0].startswith("REVOKE ALL ON ALL TABLES")  # nothing left over from an earlier list
    assert not any("ground_truth" in s or "decisions" in s or "deployment_ledger" in s for s in statements)
    # airflow-init runs it, as the ops store's owner
    script = (ROOT / "deploy" / "airflow" / "init.sh").read_text()
    assert 'python "${OPS_STORE_INIT:-/opt/mlops-deploy/ops-store-init.py}"' in script
    mounts = [v.split(":") for v in load_compose()["services"]["airflow-init"]["volumes"]]
    assert ["./deploy/postgres/ops_store_init.py", "/opt/mlops-deploy/ops-store-init.py", "ro"] in mounts
    assert urlsplit(compose_env("airflow-init")["MLOPS_OPS_DB_URL"]).username == DB_ROLES["ops"]


def test_serving_holds_no_alert_secret_no_superuser_and_a_read_only_mlflow_user():
    compose = load_compose()
    assert secrets_held(compose, "serving") == {
        "SERVING_DB_PASSWORD",
        "MLFLOW_SERVING_PASSWORD",
        "MLOPS_SERVING_ADMIN_TOKEN",
        "MLOPS_SERVING_API_KEY",
    }
    env = compose_env("serving")
    assert not [k for k in env if k.startswith("MLOPS_ALERT_")]
    assert urlsplit(env["MLOPS_OPS_DB_URL"]).username == SERVING_DB_ROLE
    assert env["MLFLOW_TRACKING_USERNAME"] != compose_env("mlflow")["MLFLOW_AUTH_ADMIN_USERNAME"]
    # mlflow-init creates that user as the admin; MLflow's default permission makes it read-only
    init = compose_env("mlflow-init")
    assert (init["MLFLOW_SERVING_USERNAME"], init["MLFLOW_SERVING_PASSWORD"]) == (
        env["MLFLOW_TRACKING_USERNAME"],
        env["MLFLOW_TRACKING_PASSWORD"],
    )
    assert init["MLFLOW_TRACKING_PASSWORD"] == TEST_ENV["MLFLOW_ADMIN_PASSWORD"]
    assert re.search(r"^default_permission = READ$", (ROOT / "deploy" / "mlflow" / "basic_auth.ini").read_text(), flags=re.M)
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["services"]["mlflow-init"]["volumes"]}
    assert mounts[compose["services"]["mlflow-init"]["command"][-1]] == "./deploy/mlflow/init_users.py"
    deps = compose["services"]["serving"]["depends_on"]
    assert deps["mlflow-init"] == deps["airflow-init"] == {"condition": "service_completed_successfully"}


def test_secrets_held_catches_an_alert_secret_given_to_serving():
    compose = copy.deepcopy(load_compose())
    compose["services"]["serving"]["environment"]["MLOPS_ALERT_SMTP_PASSWORD"] = "${MLOPS_ALERT_SMTP_PASSWORD:-}"
    assert "MLOPS_ALERT_SMTP_PASSWORD" in secrets_held(compose, "serving")


def networks_of(compose: dict, service: str) -> set[str]:
    nets = compose["services"][service].get("networks") or ["default"]
    return set(nets)


def reachable(compose: dict, a: str, b: str) -> bool:
    return bool(networks_of(compose, a) & networks_of(compose, b))


#: Who must reach whom (each by its service name in an URL or a command).
MUST_REACH = {
    "airflow-worker": ["postgres", "redis", "mlflow", "serving-proxy", "evidently-ui", "airflow-api-server"],
    "airflow-scheduler": ["postgres", "redis"],
    "airflow-dag-processor": ["postgres", "airflow-api-server"],
    "airflow-triggerer": ["postgres", "airflow-api-server"],
    "airflow-init": ["postgres"],
    "mlflow": ["postgres", "minio"],
    "mlflow-init": ["mlflow"],
    "minio-init": ["minio"],
    "serving": ["postgres", "mlflow"],
    "serving-proxy": ["serving"],
}
#: What the serving replicas (the one service anyone may send requests to) must not reach.
SERVING_MUST_NOT_REACH = ["redis", "minio", "airflow-api-server", "airflow-worker", "airflow-scheduler", "evidently-ui"]


def network_problems(compose: dict) -> list[str]:
    problems = []
    nets = compose.get("networks") or {}
    for name, svc in compose["services"].items():
        if not svc.get("networks"):
            problems.append(f"{name}: on the default network (name its networks)")
        elif not set(svc["networks"]) <= set(nets):
            problems.append(f"{name}: unknown network {sorted(set(svc['networks']) - set(nets))}")
        if svc.get("ports") and all((nets.get(n) or {}).get("internal") for n in svc.get("networks") or []):
            problems.append(f"{name}: publishes a port but is on internal networks only")
    open_nets = {n for n, cfg in nets.items() if not (cfg or {}).get("internal")}
    if open_nets != {"edge"}:
        problems.append(f"networks other than edge are not internal: {sorted(open_nets - {'edge'})}")
    problems += [f"{a} cannot reach {b}" for a, peers in MUST_REACH.items() for b in peers if not reachable(compose, a, b)]
    problems += [f"serving can reach {b}" for b in SERVING_MUST_NOT_REACH if reachable(compose, "serving", b)]
    if networks_of(compose, "serving") & open_nets:
        problems.append("serving is on a network with a way out")
    if networks_of(compose, "postgres") & open_nets:
        problems.append("postgres is on a network with a way out")
    return problems


def test_networks_separate_the_serving_replicas_and_the_database():
    assert network_problems(load_compose()) == []


def test_network_check_catches_serving_on_the_broker_network():
    compose = copy.deepcopy(load_compose())
    compose["services"]["serving"]["networks"].append("broker")
    compose["services"]["postgres"]["networks"].append("edge")
    compose["networks"]["storage"] = {}
    problems = network_problems(compose)
    assert "serving can reach redis" in problems and "postgres is on a network with a way out" in problems
    assert "networks other than edge are not internal: ['storage']" in problems


def test_the_serving_journal_is_on_a_volume_the_replicas_share():
    compose = load_compose()
    env = compose_env("serving")
    journal = get_settings(
        {"MLOPS_HOME": env["MLOPS_HOME"], "MLOPS_SERVING_JOURNAL": env.get("MLOPS_SERVING_JOURNAL", "")}
    ).serving_journal_dir
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["services"]["serving"]["volumes"]}
    assert mounts.get(str(journal)) in compose["volumes"], f"{journal} is not on a named volume"


def test_the_image_owns_every_folder_a_named_volume_is_mounted_on():
    """A new named volume takes the ownership of the image's folder it is mounted on: without the
    folder in the image, the volume is root's and the image's airflow user cannot write to it."""
    compose = load_compose()
    dockerfile = (ROOT / "deploy" / "airflow.Dockerfile").read_text()
    (chown,) = re.findall(r"chown airflow:0 ([^\n\\&]+)", dockerfile)
    owned = set(chown.split())
    for name, svc in compose["services"].items():
        if "build" not in svc:
            continue
        for mount in svc.get("volumes", []):
            source, target = mount.split(":")[:2]
            if source in compose["volumes"] and not target.startswith("/opt/airflow/"):
                assert target in owned, f"{name}: {source} on {target}, which the image does not create for airflow"
