"""The attack suite `make reliability` runs (``scripts/reliability_attacks.py``), in its smoke version: the
file-borne attack, and a small health flood against ``audiomemory up --models tiny`` in a capped child process,
beside a victim's job and a health probe."""

from __future__ import annotations

import pytest

from .smoke import run_script

FIGURES = {"rss_before_mb", "rss_peak_mb", "rss_growth_mb", "legit_mb", "victim_seconds", "victim_status",
           "health", "server_alive", "failed", "ok"}


@pytest.mark.long  # each attack's defence is tested directly: runtime/test_hostile_peers.py, the catalogue, e2e
def test_the_quick_attack_suite_passes_and_reports_every_figure() -> None:
    report = run_script("reliability_attacks", "--quick")  # the script exits 1 when any criterion fails
    assert report["all_ok"] is True
    assert set(report["attacks"]) == {"4 file-borne (reproduce)", "plain 1 health flood"}
    flood = report["attacks"]["plain 1 health flood"]
    assert set(flood) >= FIGURES, flood
    assert flood["watch"] == {"UNIMPLEMENTED": 20} and flood["check"] == {"INVALID_ARGUMENT": 20}
    assert flood["victim_status"] == "OK" and set(flood["health"]) == {"SERVING"}
    borne = report["attacks"]["4 file-borne (reproduce)"]
    assert borne["payload_live"] is True and borne["marker_exists"] is False and borne["reproduce_exit"] != 0
