"""A service that dies leaves nothing running: `make up`/`make down` stop what its session left.

Airflow's task supervisor puts each task in its own process group, so a scheduler killed with its
group leaves the task (and a scheduler killed alone leaves its LocalExecutor workers) running in the
dead service's session. Here a real process tree shaped like that is started the way the stack
starts services, its leader is SIGKILLed, and the stack's bookkeeping must stop the rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from include.mlops.settings import get_settings
from tooling import stack

pytestmark = pytest.mark.integration

TREE = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], process_group=0)
print(child.pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(") ", 1)[-1].split()[0] != "Z"


def start_tree(s, name):
    proc = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True, start_new_session=True)
    child = int(proc.stdout.readline())
    s.run_dir.mkdir(parents=True, exist_ok=True)
    stack._pid_file(s, name).write_text(json.dumps({"pid": proc.pid, "start_ticks": stack._start_ticks(proc.pid)}))
    return proc, child


def test_a_dead_services_leftovers_are_stopped(tmp_path):
    s = get_settings({"MLOPS_HOME": str(tmp_path)})
    proc, child = start_tree(s, "airflow-scheduler")
    assert os.getpgid(child) == child and os.getsid(child) == proc.pid  # own group, same session
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert alive(child)  # the leftover a crash leaves
    assert stack.running_pid(s, "airflow-scheduler", reap=True) is None
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child)


def test_stopping_a_service_stops_tasks_in_their_own_groups(tmp_path):
    s = get_settings({"MLOPS_HOME": str(tmp_path)})
    proc, child = start_tree(s, "airflow-scheduler")
    stack._stop_pid(proc.pid, grace=5)
    proc.wait(10)
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child)
