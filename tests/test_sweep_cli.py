"""The ``llmkick`` command line itself: version, plain-text help, one-line user errors, console lines; the
sweep's plan (which bits each quantization method is paired with, said before anything runs)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from sweep_processes import run_cli

from llmkick_models.engine.methods import METHODS, register_method
from llmkick_models.engine.methods.base import CompressionMethod
from llmkick_models.engine.options import REQUIRED, Option, integer
from llmkick_models.workflow import sweep
from llmkick_models.workflow.cli import main
from llmkick_models.workflow.sweep import Slot
from llmkick_models.workflow.sweep_plan import SweepError, SweepPoint, plan_grid


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return run_cli(argv)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"llmkick {version('llmkick')}"


def test_help_is_plain_text_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text and "examples:" in text and "llmkick sweep --model" in text
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    text = capsys.readouterr().out
    assert "``" not in text
    assert "Any option not listed above is passed through to lm_eval" in text
    assert "--devices cuda:0,cuda:1" in text and "--launcher slurm" in text


def test_user_errors_are_one_message_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "no_run"
    result = _cli("report", str(missing))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"llmkick report: error: {missing} is not a sweep run directory (no sweep.json); run `llmkick sweep` "
        "first"
    ]
    judged = _cli("judge", str(missing))
    assert (
        judged.returncode == 2 and judged.stderr.strip() == f"llmkick judge: error: {missing} does not exist"
    )
    existing = tmp_path / "exists"
    existing.mkdir()
    compress = _cli("compress", "--model", "m", "--output", str(existing))
    assert compress.returncode == 2 and "Traceback" not in compress.stderr
    assert (
        compress.stderr.strip() == f"llmkick compress: error: --output {existing} exists; choose a new folder"
    )
    missing_model = _cli("compress", "--model", str(missing), "--output", str(tmp_path / "out"))
    assert missing_model.returncode == 2 and "Traceback" not in missing_model.stderr
    assert missing_model.stderr.startswith(
        f"llmkick compress: error: --model {missing} could not be loaded: "
    )
    # --debug, anywhere on the line, shows where it came from
    debug = _cli("report", str(missing), "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr


@pytest.mark.parametrize(
    ("bug", "shown"),
    [
        ("int('not a number')", "ValueError: invalid literal for int()"),
        ("open('/no/such/llmkick/file')", "FileNotFoundError: [Errno 2]"),
    ],
)
def test_internal_errors_keep_their_traceback(bug: str, shown: str) -> None:
    # A ValueError or OSError that no check of ours raised is a bug (or the system's), not a typo.
    code = (
        "import sys\nfrom llmkick_models.workflow import cli\n"
        f"cli.report_command = lambda args: {bug}\nsys.exit(cli.main(['report', 'x']))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and shown in result.stderr
    assert "llmkick report: error:" not in result.stderr


def test_sweep_refusal_is_one_message(tiny_llama_dir: Path, tmp_path: Path) -> None:
    result = _cli("sweep", "--model", str(tiny_llama_dir), "--methods", "magnitude", "--sparsities", "0.5",
                  "--tasks", "no_such_task", "--output", str(tmp_path / "r"))  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("llmkick sweep: error: --tasks:") and "no_such_task" in result.stderr


def test_point_lines_go_through_tqdm_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tqdm.auto import tqdm

    written: list[str] = []
    monkeypatch.setattr(tqdm, "write", classmethod(lambda cls, text, file=None: written.append(text)))
    monkeypatch.setattr(sweep, "execute_point", lambda plan, point, point_dir, slot: (False, "FAILED (x)"))
    points = [SweepPoint(), SweepPoint("magnitude", 0.5)]
    plan = sweep.SweepPlan(points, "pretrained=m", "t", {}, [], {}, {p.point_id: {} for p in points})
    sweep.run_sweep(plan, tmp_path, slots=[Slot()])
    assert sorted(written) == ["[1/2] dense: FAILED (x)", "[2/2] magnitude-s0.5: FAILED (x)"]


# ---- the plan: each quantization method at the bits it allows (LLM-KICK's Table 2 layout) -------------


@pytest.fixture
def int8_only() -> Iterator[str]:
    """A toy quantization method whose ``bits`` option takes 8 only (as LLM.int8()'s does)."""
    eight = Option("bits", integer("bits", "8", 8, 8), REQUIRED, "bits per weight", "8", field="bits")

    class EightBit(CompressionMethod):
        name: ClassVar[str] = "eightbit"
        options = (eight,)

    register_method("eightbit", EightBit)
    yield "eightbit"
    del METHODS["eightbit"]


def test_each_quantizer_gets_the_bits_it_allows_and_the_plan_says_so(int8_only: str) -> None:
    grid = plan_grid(["gptq", int8_only, "rtn"], bits=[8, 4])
    assert [p.point_id for p in grid.points] == [
        "dense", "gptq-8bit", "gptq-4bit", "eightbit-8bit", "rtn-8bit", "rtn-4bit"
    ]  # fmt: skip
    assert grid.notes == ["eightbit: bits 8 only (4 skipped: the method allows 8)"]
    assert plan_grid(["gptq", "rtn"], bits=[8, 4]).notes == []


def test_a_quantizer_that_allows_none_of_the_bits_is_refused_naming_bits(int8_only: str) -> None:
    with pytest.raises(
        SweepError,
        match=r"^--bits 4,3: method eightbit allows 8 only; add such a value to --bits or drop eightbit "
        r"from --methods$",
    ):
        plan_grid(["gptq", int8_only], bits=[4, 3])
    with pytest.raises(SweepError, match=r"^--bits 9: no method of --methods takes it \(gptq allows 2-8; "):
        plan_grid(["gptq", int8_only], bits=[8, 9])


def test_the_plan_notes_are_printed_before_any_check_or_point(
    int8_only: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmkick_models.workflow import preflight

    seen: list[str] = []

    def stop(*args: object, **kwargs: object) -> None:
        seen.append(capsys.readouterr().out)
        raise SweepError("stopped before pre-flight")

    monkeypatch.setattr(preflight, "preflight", stop)
    with pytest.raises(SystemExit):
        main(["sweep", "--model", "m", "--methods", f"gptq,{int8_only}", "--bits", "8,4", "--tasks", "t",
              "--output", str(tmp_path / "run")])  # fmt: skip
    assert seen == ["llmkick sweep: eightbit: bits 8 only (4 skipped: the method allows 8)\n"]
    assert not (tmp_path / "run").exists()
