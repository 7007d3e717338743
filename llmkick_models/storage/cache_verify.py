"""Check a model loaded from the cache against the compression report stored with it.

The digests of :mod:`.model_cache` catch damaged files; this measures what the loaded weights actually are
(zeros per layer, N:M violations, quantization levels per group), so that the report a cache hit puts in
the results is measured, never copied, and an entry that does not hold what its manifest says is rebuilt.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from llmkick_models.engine.methods import method_class
from llmkick_models.engine.model_layout import TargetLinear, decoder_linears
from llmkick_models.engine.report import CompressionReport, LayerReport, measure_model
from llmkick_models.engine.spec import CompressionSpec

#: Rows per layer whose quantization levels are counted (sorting every row of a large model is not cheap;
#: damaged bytes anywhere are caught by the file digests, this checks the grid itself).
LEVEL_ROWS = 64


def max_levels(target: TargetLinear, spec: CompressionSpec, rows: int = LEVEL_ROWS) -> tuple[int, int]:
    """(most distinct values in one quantization group of sampled rows, the most the spec allows)."""
    assert spec.bits is not None
    weight = target.weight
    out_features, in_features = weight.shape
    step = max(1, out_features // rows)
    sample = weight[::step][:rows].float()
    group = spec.group_size or in_features
    allowed = 2**spec.bits
    if getattr(spec, "act_order", False) and spec.group_size is not None:
        # Act-order groups follow the Hessian's column order, not contiguous columns: bound per row.
        group = in_features
        allowed *= math.ceil(in_features / spec.group_size)
    if in_features % group:
        group = in_features
    segments = sample.reshape(sample.shape[0], in_features // group, group)
    ordered = segments.sort(dim=-1).values
    distinct = (ordered[..., 1:] != ordered[..., :-1]).sum(dim=-1) + 1
    return int(distinct.max()), allowed


def verify_loaded(
    model: nn.Module, spec: CompressionSpec, stored: dict[str, Any]
) -> tuple[CompressionReport, list[str]]:
    """Measure ``model``'s compressed linears; return the measured report and every disagreement.

    The report keeps what cannot be re-measured without calibration data (reconstruction errors, the
    calibration description, the compression time) from ``stored``; zeros, sparsity and N:M violations
    are the measured ones.
    """
    targets = decoder_linears(model)
    with torch.no_grad():
        measured = measure_model(targets, spec)
        problems: list[str] = []
        stored_layers = stored.get("layers") or {}
        names = [layer.name for layer in measured.layers]
        if set(names) != set(stored_layers):
            missing = sorted(set(stored_layers) - set(names))[:3]
            extra = sorted(set(names) - set(stored_layers))[:3]
            problems.append(
                f"compressed layers differ from the stored report (missing {missing}, new {extra})"
            )
        layers: list[LayerReport] = []
        for target, layer in zip(targets, measured.layers, strict=True):
            saved = stored_layers.get(layer.name, {})
            if saved:
                if tuple(saved.get("shape", ())) != layer.shape:
                    problems.append(
                        f"{layer.name}: shape {layer.shape}, stored {tuple(saved.get('shape', ()))}"
                    )
                if saved.get("zeros") != layer.zeros:
                    problems.append(
                        f"{layer.name}: {layer.zeros} zeros, the stored report says {saved.get('zeros')}"
                    )
            if layer.nm_violations:
                problems.append(f"{layer.name}: {layer.nm_violations} groups break pattern={spec.pattern}")
            if spec.bits is not None:
                levels, allowed = max_levels(target, spec)
                if levels > allowed:
                    problems.append(
                        f"{layer.name}: {levels} distinct values in a group, {spec.bits} bits allow {allowed}"
                    )
            layer.extra = dict(saved.get("extra", {}))
            layers.append(layer)
        problems.extend(method_class(spec.method).loaded_problems(targets, spec))
    report = CompressionReport(spec, layers, float(stored.get("seconds", 0.0)), stored.get("calibration"))
    stored_sparsity = stored.get("overall_sparsity")
    if not problems and stored_sparsity is not None and abs(report.overall_sparsity - stored_sparsity) > 1e-9:
        problems.append(f"overall sparsity {report.overall_sparsity:.6f}, stored {stored_sparsity:.6f}")
    return report, problems
