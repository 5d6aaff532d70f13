"""The report's against-case-mix and repeat-issue sections add up to the bundle's test-period tickets."""

from __future__ import annotations

import pandas as pd
import pytest

from bundle.case_mix import CASE_MIX_DATA
from tests.report.conftest import VERSION


def test_case_mix_tables_add_up(report_json, report_models_dir):
    tickets = pd.read_parquet(report_models_dir / VERSION / CASE_MIX_DATA)
    case_mix = report_json["case_mix"]
    assert case_mix["tickets"] == len(tickets) and case_mix["observed"] == tickets["escalated"].sum()
    assert case_mix["expected"] == pytest.approx(case_mix["observed"])  # the window is the reference
    assert case_mix["confidence"] == 0.95 and case_mix["min_tickets"] == 20
    for name, table in case_mix["tables"].items():
        assert table["compared"] == tickets[name].nunique(), name
        for row in table["rows"]:
            assert row["ci_low"] <= row["ratio"] <= row["ci_high"]
            if row["flag"] == "above":
                assert row["ci_low"] > 1 and row["tickets"] >= 20
    teams = {r["value"]: r for r in case_mix["tables"]["group"]["rows"]}
    for team, count in tickets["group"].value_counts().items():
        if team in teams:
            assert teams[team]["tickets"] == count


def test_report_shows_case_mix_and_repeat_issues(report_html, report_json, report_written):
    assert 'id="case-mix"' in report_html and 'id="repeat-issues"' in report_html
    assert "Observed / expected" in report_html and "interval excludes 1" in report_html
    repeats = report_json["repeat_issues"]
    assert 0 < repeats["repeat_contacts"] < repeats["tickets"]
    assert sum(t["tickets"] for t in repeats["topics"]) <= repeats["tickets"]
    csv = pd.read_csv(report_written["dir"] / "case_mix.csv")
    assert set(csv["dimension"]) == set(report_json["case_mix"]["tables"])
    assert (report_written["dir"] / "repeat_issues.csv").is_file()
