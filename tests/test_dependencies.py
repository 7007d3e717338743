"""The package's requirements leave torch open upwards; the CPU pin lives in a constraints file only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

PROJECT = Path(__file__).resolve().parents[1]


def _requirements() -> dict[str, Requirement]:
    data = tomllib.loads((PROJECT / "pyproject.toml").read_text())
    return {Requirement(text).name: Requirement(text) for text in data["project"]["dependencies"]}


def test_torch_has_no_upper_bound() -> None:
    torch = _requirements()["torch"]
    for version in ("2.4.0", "2.13.0", "2.14.1", "2.15.0", "3.0.0"):
        assert torch.specifier.contains(version), f"torch {version} refused by {torch}"
    assert not torch.specifier.contains("2.3.1")


def test_ci_pins_the_cpu_wheel_through_the_constraints_file() -> None:
    constraints = (PROJECT / "scripts" / "constraints-cpu.txt").read_text()
    assert "torch==2.13.0" in constraints
    ci = (PROJECT / ".ci" / "run").read_text()
    assert "-c scripts/constraints-cpu.txt torch" in ci and "torch==" not in ci


@pytest.mark.network
def test_a_fresh_resolve_takes_the_newest_torch(tmp_path: Path) -> None:
    """pip resolves llmkick together with the newest torch on the index (metadata only, nothing installed)."""
    newest = (
        subprocess.run(
            [sys.executable, "-m", "pip", "index", "versions", "torch"], capture_output=True, text=True
        )
        .stdout.split("(")[1]
        .split(")")[0]
    )  # "torch (2.15.0)" -> 2.15.0
    report = tmp_path / "report.json"
    # The machine's own pip configuration may cap torch; the package alone must not.
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_CONSTRAINT": ""}
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
         "--report", str(report), f"torch=={newest}", str(PROJECT)],
        check=True, env=env, timeout=600,
    )  # fmt: skip
    installed = {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    assert installed["torch"] == newest and "llmkick" in installed
