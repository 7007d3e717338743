"""Install the package into a fresh venv and drive the real ``lm_eval`` CLI (no flags, no include path)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT

pytestmark = pytest.mark.venv


def _run(python: Path, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    result = subprocess.run([str(python), *args], capture_output=True, text=True, cwd=cwd, env=env)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{args} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv holding a wheel install of llmkick; dependencies come from this venv via a path line."""
    root = tmp_path_factory.mktemp("fresh_venv")
    venv.create(root, with_pip=True)
    python = root / "bin" / "python"
    inner_site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=root)
    # A plain path line: the outer site-packages' own .pth files (our editable install) are NOT processed.
    Path(inner_site.stdout.strip(), "outer_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        python,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        str(PROJECT_ROOT),
        cwd=root,
    )
    return python


def test_wheel_install_imports_its_own_copy(fresh_python: Path, tmp_path: Path) -> None:
    where = _run(
        fresh_python, "-c", "import llmkick_models, sys; print(llmkick_models.__file__)", cwd=tmp_path
    )
    assert str(fresh_python.parents[1]) in where.stdout


def test_cli_compressed_hf_and_hf(
    fresh_python: Path, tiny_llama_dir: Path, local_task_dir: Path, tmp_path: Path
) -> None:
    common = [
        "--tasks",
        "local_fixture_choice",
        "--include_path",
        str(local_task_dir),
        "--device",
        "cpu",
        "--limit",
        "4",
    ]
    _run(
        fresh_python, "-m", "lm_eval", "--model", "compressed-hf",
        "--model_args", f"pretrained={tiny_llama_dir},method=magnitude,pattern=2:4",
        *common, "--output_path", str(tmp_path / "out"), cwd=tmp_path,
    )  # fmt: skip
    (results_file,) = (tmp_path / "out").rglob("results_*.json")
    report = json.loads(results_file.read_text())["config"]["llmkick_compression"]
    assert report["compressed_linears"] == 14
    assert all(layer["sparsity"] == 0.5 for layer in report["layers"].values())
    assert all(layer["nm_violations"] == 0 for layer in report["layers"].values())
    plain = _run(
        fresh_python,
        "-m",
        "lm_eval",
        "--model",
        "hf",
        "--model_args",
        f"pretrained={tiny_llama_dir}",
        *common,
        cwd=tmp_path,
    )
    assert "local_fixture_choice" in plain.stdout


def test_cli_lists_llmkick_tasks(fresh_python: Path, tmp_path: Path) -> None:
    listing = _run(fresh_python, "-m", "lm_eval", "ls", "tasks", cwd=tmp_path).stdout
    ours = {
        match.group(1)
        for path in (PROJECT_ROOT / "llmkick_tasks").rglob("*.yaml")
        for match in re.finditer(r"^(?:task|group): *(\S+)", path.read_text(), re.MULTILINE)
    }
    assert all(name in listing for name in ours), sorted(n for n in ours if n not in listing)
    tm_paths = _run(
        fresh_python,
        "-c",
        "from lm_eval.tasks import TaskManager; print(TaskManager().include_path)",
        cwd=tmp_path,
    )
    assert str(fresh_python.parents[1]) in tm_paths.stdout  # the installed llmkick_tasks, not the checkout


def test_cli_bad_argument_fails_fast_naming_it(
    fresh_python: Path, local_task_dir: Path, tmp_path: Path
) -> None:
    result = _run(
        fresh_python, "-m", "lm_eval", "--model", "compressed-hf",
        "--model_args", f"pretrained={tmp_path / 'missing'},method=magnitude,pattern=3:2",
        "--tasks", "local_fixture_choice", "--include_path", str(local_task_dir), "--device", "cpu",
        cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "pattern='3:2'" in result.stderr + result.stdout
    assert "OSError" not in result.stderr  # failed on the argument, not on loading the missing model


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
