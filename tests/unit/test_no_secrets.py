"""No secret is committed: every tracked text file is scanned for credential shapes. Secrets come
from the environment (.env, git-ignored) or Airflow connections, never from the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PATTERNS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[0-9A-Za-z-]{10,}"),
    "Slack webhook": re.compile(r"hooks\.slack\.com/services/T[0-9A-Z]+/B[0-9A-Z]+/[0-9A-Za-z]{10,}"),
    "GitHub token": re.compile(r"\bgh[pousr]_[0-9A-Za-z]{30,}"),
    "URL with a password": re.compile(r"\b[a-z+]+://[^/\s:@'\"]+:(?!\*|<|\{|\$)[^/\s:@'\"]{6,}@"),
    "assigned secret": re.compile(
        r"(?i)\b(password|passwd|secret|api_key|token)\s*[:=]\s*['\"](?!\*|<|\{|\$|test|dummy|wrong|secret|changeme)[A-Za-z0-9/+_\-]{12,}['\"]"
    ),
}


#: Obvious stand-ins in tests and docs (a fake Slack path, an example host).
PLACEHOLDERS = ("XXXX", "example", "EXAMPLE")


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / line for line in out.splitlines() if line and not line.endswith((".png", ".parquet", ".lock"))]


def test_no_credentials_in_tracked_files():
    found = []
    for path in tracked_files():
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        for what, pattern in PATTERNS.items():
            for m in pattern.finditer(text):
                if any(placeholder in m.group(0) for placeholder in PLACEHOLDERS):
                    continue
                found.append(f"{path.relative_to(ROOT)}: {what}: {m.group(0)[:60]}")
    assert not found, "\n".join(found)


def test_the_scan_catches_what_it_claims_to():
    # built at run time, so this file does not trip its own scan
    leaked = "pass" + 'word = "hunter2hunter2hunter2"\n' + "postgresql://loop:" + "s3cretpass@db:5432/ops\n"
    hits = [what for what, p in PATTERNS.items() if p.search(leaked)]
    assert hits == ["URL with a password", "assigned secret"]


def test_state_and_env_files_are_ignored():
    ignored = subprocess.run(
        ["git", "check-ignore", ".env", ".local/ops.db", ".local/run/serving-admin-token"], cwd=ROOT, capture_output=True, text=True
    )
    assert ignored.stdout.split() == [".env", ".local/ops.db", ".local/run/serving-admin-token"]
