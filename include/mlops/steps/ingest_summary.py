"""Totals and labels of one ingest run (the DAG's asset event extras and the mapped tasks' labels)."""

from __future__ import annotations

from typing import Any


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals of one ingest run, for asset event extras and the run's return value."""
    accepted = [r for r in results if r["status"] == "accepted"]
    quarantined = [r for r in results if r["status"] == "quarantined"]
    return {
        "accepted": [{"batch_id": r["batch_id"], "file": r["file_name"], "day": r["day"], "rows": r["rows"]} for r in accepted],
        "quarantined": [
            {
                "batch_id": r["batch_id"],
                "file": r["file_name"],
                "day": r["day"],
                "reason_codes": r["reason_codes"],
                "report": r["report_path"],
            }
            for r in quarantined
        ],
        "accepted_rows": sum(r["rows"] for r in accepted),
    }


def task_label(results: list[dict[str, Any]], files: list[str], limit: int = 240) -> str:
    """The mapped task's label in the Airflow grid: every verdict, or a summary when too long."""
    if not results:
        names, tail = ", ".join(files), ": already handled"
        return (names if len(names) + len(tail) <= limit else names[: limit - len(tail) - 3] + "...") + tail
    parts = [
        f"{r['file_name']}: {r['status']}" + (f" ({', '.join(r['reason_codes'])})" if r["reason_codes"] else f" ({r['rows']} rows)")
        for r in results
    ]
    text = "; ".join(parts)
    if len(text) <= limit:
        return text
    accepted = sum(r["status"] == "accepted" for r in results)
    bad = [f"{r['file_name']} ({', '.join(r['reason_codes'])})" for r in results if r["status"] != "accepted"]
    summary = f"{accepted} accepted, {len(bad)} quarantined" + (": " + "; ".join(bad) if bad else "")
    return summary if len(summary) <= limit else summary[: limit - 3] + "..."
