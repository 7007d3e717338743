"""What the compression benchmarks share: offline set-up, peak RSS, and one measurement per subprocess.

Each measured step runs in a fresh ``python <script> --worker <step> ...`` process so that its peak RSS
(``ru_maxrss``) is its own; the worker prints one JSON line that the parent reads back.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
#: Real calibration text when the shared data sits beside the project; random tokens otherwise.
DEFAULT_TEXT = ROOT.parent / "shared" / "data" / "wikitext2"


def rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(script: str, step: str, worker_args: Sequence[str]) -> dict[str, Any]:
    """Run ``script --worker step *worker_args`` in a new process and return its JSON result."""
    command = [sys.executable, script, "--worker", step, *worker_args]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])
