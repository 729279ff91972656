"""`python -m experiments.reproduce`: runs modules, caches them, carries on, writes REPORT.md."""

from __future__ import annotations

import json

import pytest

from experiments import reproduce

TARGETS = """# A module's results

| target | measured | threshold | verdict |
|---|---|---|---|
| ratio | 0.2 | <= 0.33 | PASS |
| other ratio | 1.4 | <= 1 | FAIL |
"""


def test_report_only_collects_the_results_files_and_their_verdicts(tmp_path):
    (tmp_path / "ssm_memory.md").write_text(TARGETS)
    report = reproduce.main(["--report-only", "--out", str(tmp_path)]).read_text()
    summary = report.split("## Summary")[1].split("# Adjoint sharding")[0]
    assert "| ssm | `ssm_memory` | present | 1 PASS, 1 FAIL | no GPU" in summary
    assert "| cnode | `cnode_accuracy` | not run |" in summary
    assert "## A module's results" in report  # one heading level down, under the paper's
    assert "## `parabolic_table1`: not run" in report
    assert not (tmp_path / "cache.json").exists()


def test_a_failure_is_reported_and_the_rest_still_runs(tmp_path, monkeypatch):
    calls = []

    def fake_run(module, profile, out, log):
        calls.append(module)
        if module == "ssm_time":
            return "failed", "exit 1: boom (log: ssm_time.log)"
        (out / f"{module}.md").write_text(f"# {module}\n")
        return "done", ""

    monkeypatch.setattr(reproduce, "_run_module", fake_run)
    only = ["--only", "ssm_memory", "ssm_time", "ssm_vjp_counts", "--out", str(tmp_path)]
    report = reproduce.main(only).read_text()
    assert calls == ["ssm_memory", "ssm_time", "ssm_vjp_counts"]
    assert "| `ssm_time` | failed |  |  | exit 1: boom" in report  # quick: no cpu conditions
    cache = json.loads((tmp_path / "cache.json").read_text())
    assert set(cache) == {"ssm_memory", "ssm_vjp_counts"}  # the failure is not cached

    calls.clear()
    report = reproduce.main(only).read_text()
    assert calls == ["ssm_time"]  # only what failed runs again
    assert "| `ssm_memory` | cached |" in report


def test_a_changed_profile_is_not_taken_from_the_cache(tmp_path, monkeypatch):
    calls = []

    def fake_run(module, profile, out, log):
        calls.append((module, profile))
        (out / f"{module}.md").write_text(f"# {module}\n")
        return "done", ""

    monkeypatch.setattr(reproduce, "_run_module", fake_run)
    reproduce.main(["--only", "cnode_crossing", "--out", str(tmp_path)])
    reproduce.main(["--only", "cnode_crossing", "--profile", "cpu", "--out", str(tmp_path)])
    reproduce.main(["--only", "cnode_crossing", "--profile", "cpu", "--out", str(tmp_path)])
    assert calls == [("cnode_crossing", "quick"), ("cnode_crossing", "cpu")]


@pytest.mark.slow
def test_the_quick_profile_of_a_real_module_runs_through_reproduce(tmp_path):
    report = reproduce.main(
        ["--profile", "quick", "--only", "cnode_crossing", "--out", str(tmp_path)]
    ).read_text()
    assert "| `cnode_crossing` | done |" in report
    assert (tmp_path / "cnode_crossing.md").exists() and (tmp_path / "cnode_crossing.png").exists()
    assert "C-NODE" in report.split("Characteristic Neural ODEs")[1]


@pytest.mark.slow
def test_the_whole_quick_profile_reproduces_without_a_failure(tmp_path):
    report = reproduce.main(["--profile", "quick", "--out", str(tmp_path)]).read_text()
    summary = report.split("## Summary")[1].split("# Adjoint sharding")[0]
    assert "| failed |" not in summary and "| missing |" not in summary
    assert (tmp_path / "REPORT.md").exists()


def test_the_package_entry_point_runs_from_any_directory(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "adjoint_lab.experiments.reproduce", "--report-only", "--out", out],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "## Summary" in (out / "REPORT.md").read_text()
