"""Connect args of Airflow's SQLite metadata database in the embedded stack.

Four Airflow components and every task share one SQLite file; under load a writer can wait for
the lock longer than SQLite's default 5 s and the request fails with "database is locked" (seen:
a REST call answering 500 "Database error" during the demo). Waiting up to 30 s instead costs
nothing when the database is free. Named by import path in
``AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS`` (and ``..._ASYNC``) by ``tooling.stack``.
"""

CONNECT_ARGS = {"timeout": 30}
