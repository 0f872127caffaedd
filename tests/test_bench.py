"""Smoke test of the load-testing harness: one quick run against this project's watchdog.

It checks the shape of the results, never a speed.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import pytest

from bench import cli

REPO_ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = {"spawn-ceiling", "loadgen-ceiling", "throughput", "overload", "large-body", "timeout"}
MACHINE_FIELDS = ("cores", "cpu_model", "kernel", "python", "memory_total_bytes")
# Below the test's own timeout, so that a stuck run is stopped with SIGTERM and can clean up.
RUN_TIMEOUT_S = 100


def _run_quick(output_dir: Path) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "bench", "run", "--quick", "--no-progress",
        f"--output-dir={output_dir}",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the harness stops its servers on SIGTERM
        stdout, stderr = proc.communicate(timeout=15)
        pytest.fail(f"python -m bench run --quick took over {RUN_TIMEOUT_S} s:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def _numbers(value: Any) -> list[float]:
    """Return every int or float nested in value, booleans excluded."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [value]
    if isinstance(value, dict):
        return [number for item in value.values() for number in _numbers(item)]
    if isinstance(value, list):
        return [number for item in value for number in _numbers(item)]
    return []


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    output_dir = tmp_path_factory.mktemp("bench-results")
    completed = _run_quick(output_dir)
    json_files = sorted(output_dir.glob("*.json"))
    svg_files = sorted(output_dir.glob("*.svg"))
    return {"completed": completed, "json_files": json_files, "svg_files": svg_files}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quick_run_exits_zero(quick_run: dict[str, Any]) -> None:
    completed = quick_run["completed"]
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Results:" in completed.stdout


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quick_run_results_json(quick_run: dict[str, Any]) -> None:
    assert len(quick_run["json_files"]) == 1, quick_run["completed"].stderr[-3000:]
    document = json.loads(quick_run["json_files"][0].read_text())

    assert set(document["scenarios"]) == SCENARIOS
    assert {record["scenario"] for record in document["results"]} == SCENARIOS
    assert document["errors"] == []
    for record in document["results"]:
        assert record["error"] is None, record
        assert record["figures"], f"{record['scenario']} has no figures"
    for name in MACHINE_FIELDS:
        assert document["machine"][name], f"machine field {name} is empty"
    assert document["load_tools"]["throughput"] in ("wrk", "builtin")
    assert document["settings"]["quick"] is True

    for record in document["results"]:
        for number in _numbers(record["figures"]):
            assert math.isfinite(number), record
            assert number >= 0, record
    assert all(number >= 0 for number in _numbers(document["summary"]))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quick_run_checks_recorded(quick_run: dict[str, Any]) -> None:
    document = json.loads(quick_run["json_files"][0].read_text())
    checks = document["checks"]

    assert "max_inflight_held" in checks["overload"]["A"]
    assert any(name.endswith("sha256_match") for name in checks["large-body"]["A"])
    assert "all_responses_within_exec_timeout_plus_1s" in checks["timeout"]["A"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quick_run_writes_svg(quick_run: dict[str, Any]) -> None:
    assert len(quick_run["svg_files"]) == 1
    svg_path = quick_run["svg_files"][0]
    assert svg_path.stem == quick_run["json_files"][0].stem
    root = ElementTree.parse(svg_path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.findall(".//{http://www.w3.org/2000/svg}circle"), "the chart has no points"


def test_set_adds_a_setting_to_every_scenario() -> None:
    args = cli.build_parser().parse_args(["run", "--set", "workers=2", "--set", "x=a=b"])
    settings = cli._settings_from_args(args)
    assert settings.server_settings == (("workers", "2"), ("x", "a=b"))
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "--set", "workers"])
