"""The scripts of ``make reliability`` besides the attack suite (test_reliability_attacks.py), in their smoke
versions: the soak, the refused credentials — each runs to its end and reports its keys. Memory under callers
runs in tests/e2e/test_job_budget_memory.py, beside the queue test it complements."""

from __future__ import annotations

from pathlib import Path

import pytest

from .smoke import run_script


@pytest.mark.slow
@pytest.mark.long
def test_reliability_soak_runs_jobs_through_the_services_as_processes(bench_work: Path) -> None:
    report = run_script("reliability_soak", "--jobs", "2", "--warmup", "1", "--threads", "1", "--work", str(bench_work))
    assert report["jobs"] == 2 and report["failures"] == 0, report["first_failures"]
    assert set(report["rss_growth_mb"]) == {"separator", "audio_encoder", "text_encoder", "generator", "transcriber",
                                            "orchestrator"}
    assert {"seconds", "rss_after_warmup_mb", "rss_end_mb", "max_growth_mb", "growth_within_50_mb"} <= set(report)


@pytest.mark.slow
@pytest.mark.long
def test_reliability_auth_refuses_every_bad_credential() -> None:
    report = run_script("reliability_auth", "--repeat", "1")
    assert report["all_as_expected"] is True and report["health_after"] == "SERVING" and report["job_after_ok"]
    assert len(report["cases"]) == 8 and all(set(case) == {"expected", "got"} for case in report["cases"].values())
