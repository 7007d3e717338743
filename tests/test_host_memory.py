"""glibc malloc thresholds during CPU calibration: set once to the dynamic ceilings, never over the user's
own settings, released at the end of a compression; and the driver uses them on the CPU only."""

from __future__ import annotations

import platform

import pytest
import torch
from calibration_fixtures import calibration_set, compress_tiny, write_corpus

from llmkick_models.engine import host_memory, sequential


class FakeGlibc:
    """Records mallopt / malloc_trim calls instead of changing this process's allocator."""

    def __init__(self, accept: bool = True) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.accept = accept

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append(("mallopt", parameter, value))
        return int(self.accept)

    def malloc_trim(self, pad: object) -> int:
        self.calls.append(("malloc_trim", getattr(pad, "value", pad)))
        return 1


@pytest.fixture
def fake_glibc(monkeypatch: pytest.MonkeyPatch) -> FakeGlibc:
    fake = FakeGlibc()
    monkeypatch.setattr(host_memory, "_glibc", lambda: fake)
    monkeypatch.setattr(host_memory, "_applied", False)
    for name in (*host_memory.USER_MALLOC_SETTINGS, "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    return fake


def test_thresholds_are_set_once_to_the_dynamic_ceilings_and_trimmed_on_release(fake_glibc) -> None:
    assert host_memory.retain_freed_memory() is True
    assert host_memory.retain_freed_memory() is True  # once per process
    assert fake_glibc.calls == [
        ("mallopt", -3, 32 * 1024 * 1024),  # M_MMAP_THRESHOLD
        ("mallopt", -1, 64 * 1024 * 1024),  # M_TRIM_THRESHOLD
    ]
    host_memory.release_free_memory()
    assert fake_glibc.calls[-1] == ("malloc_trim", 0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MALLOC_TRIM_THRESHOLD_", "0"),
        ("MALLOC_MMAP_THRESHOLD_", "131072"),
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0"),
    ],
)
def test_the_users_own_malloc_settings_are_left_alone(
    fake_glibc, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    assert host_memory.retain_freed_memory() is False
    host_memory.release_free_memory()
    assert fake_glibc.calls == []


def test_unrelated_tunables_and_a_refused_mallopt_change_nothing(fake_glibc, monkeypatch) -> None:
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.pthread.rseq=0")
    fake_glibc.accept = False
    assert host_memory.retain_freed_memory() is False
    host_memory.release_free_memory()
    assert [call[0] for call in fake_glibc.calls] == ["mallopt"]  # refused: no trim either


@pytest.mark.skipif(
    platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc", reason="needs glibc"
)
def test_this_process_has_glibc_with_the_needed_functions() -> None:
    assert host_memory._glibc() is not None


def test_the_driver_retains_and_releases_on_the_cpu(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    monkeypatch.setattr(sequential, "retain_freed_memory", lambda: events.append("retain") or True)
    monkeypatch.setattr(sequential, "release_free_memory", lambda: events.append("release"))
    calibration = calibration_set(str(write_corpus(tmp_path)), nsamples=4)
    model, _ = compress_tiny("llama", calibration, "wanda", sparsity=0.5)
    assert events == ["retain", "release"]
    assert all(p.device == torch.device("cpu") for p in model.parameters())
