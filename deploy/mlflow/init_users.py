"""mlflow-init (docker-compose.yaml): MLflow's read-only user for the serving replicas.

    MLFLOW_TRACKING_URI=... MLFLOW_TRACKING_USERNAME=<admin> MLFLOW_TRACKING_PASSWORD=... \
    MLFLOW_SERVING_USERNAME=serving MLFLOW_SERVING_PASSWORD=... python deploy/mlflow/init_users.py

Creates the user through MLflow's basic-auth API as the admin (or sets its password to the one in
.env when it exists), and makes sure it is not an admin. It gets no permission of its own: MLflow's
``default_permission = READ`` (deploy/mlflow/basic_auth.ini) lets it read experiments, registered
models, their aliases and artifacts, and change none of them: it cannot add a version to the loop's
model, move an alias or delete anything (tests/integration/test_mlflow_serving_user.py). Without
MLflow workspaces any user may still create experiments and models of its own. Safe to run again.
"""

from __future__ import annotations

import os
import sys


def ensure_read_only_user(tracking_uri: str, username: str, password: str) -> str:
    """Create ``username`` (or reset its password) as a non-admin user; returns what was done."""
    from mlflow.exceptions import MlflowException, RestException
    from mlflow.server import get_app_client

    client = get_app_client("basic-auth", tracking_uri=tracking_uri)
    try:
        client.get_user(username)
    except (RestException, MlflowException) as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_user(username, password)
        done = "created"
    else:
        client.update_user_password(username, password)
        done = "password set"
    client.update_user_admin(username, False)
    return done


def main() -> int:
    uri, user = os.environ["MLFLOW_TRACKING_URI"], os.environ.get("MLFLOW_SERVING_USERNAME") or "serving"
    if user == os.environ.get("MLFLOW_TRACKING_USERNAME"):
        print(f"MLFLOW_SERVING_USERNAME must not be the admin ({user})", file=sys.stderr)
        return 2
    done = ensure_read_only_user(uri, user, os.environ["MLFLOW_SERVING_PASSWORD"])
    print(f"mlflow-init: read-only user {user!r} {done}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
