"""Apply a ``CompressionSpec`` to a loaded model: the one entry point every caller uses."""

from __future__ import annotations

import logging
import time

import torch
from torch import nn
from tqdm.auto import tqdm

from llmkick_models.engine.calibration import CalibrationSet
from llmkick_models.engine.methods import load_method
from llmkick_models.engine.methods.base import LayerJob, compress_jobs
from llmkick_models.engine.model_layout import TargetLinear, decoder_linears
from llmkick_models.engine.report import CompressionReport, measure_layer, measure_model
from llmkick_models.engine.sequential import compress_sequential
from llmkick_models.engine.spec import CompressionSpec

log = logging.getLogger(__name__)


def check_shapes(targets: list[TargetLinear], spec: CompressionSpec) -> None:
    """Refuse before touching any weight when a layer cannot take the requested pattern or group size."""
    if spec.bits is not None and spec.group_size is not None:
        for target in targets:
            if target.shape[1] % spec.group_size:
                raise ValueError(
                    f"group_size={spec.group_size}: layer {target.name} has {target.shape[1]} input "
                    f"columns, not a multiple of {spec.group_size}; choose a group_size that divides every "
                    f"layer's input width, or group_size=-1 (per channel)"
                )
    if spec.pattern is None:
        return
    for target in targets:
        if target.shape[1] % spec.pattern.group:
            raise ValueError(
                f"pattern={spec.pattern}: layer {target.name} has {target.shape[1]} input columns, "
                f"not a multiple of {spec.pattern.group}; choose an N:M whose M divides every layer's width"
            )


def compress_model(
    model: nn.Module,
    spec: CompressionSpec,
    device: torch.device | str | None = None,
    calibration: CalibrationSet | None = None,
) -> CompressionReport:
    """Compress the decoder linears of ``model`` in place and return the measured report.

    ``device`` is where per-layer work runs (e.g. a GPU while the model sits on the CPU); defaults to
    where each weight lives.  ``calibration`` (from ``calibration.calibration_tokens``) is required
    by calibrated methods; given to magnitude pruning, it is used to measure the reconstruction
    error of each layer through the same block-by-block driver.
    """
    targets = decoder_linears(model)
    if spec.is_dense:
        return measure_model(targets, spec)
    check_shapes(targets, spec)
    method = load_method(spec.method)
    if method.needs(spec).calibration and calibration is None:
        raise ValueError(
            f"method={spec.method} needs calibration tokens (see llmkick_models.engine.calibration)"
        )
    whole = method.compress_whole_model(
        model, spec, None if device is None else torch.device(device), calibration
    )
    if whole is not None:
        return whole
    start = time.perf_counter()
    if calibration is not None:
        layers, grids = compress_sequential(model, method, spec, calibration.input_ids, device)
        seconds = time.perf_counter() - start
        return CompressionReport(spec, layers, seconds, calibration.describe(), quantized=grids)
    layers, grids = [], {}
    with torch.no_grad():
        for target in tqdm(targets, desc=f"llmkick {spec.method}", unit="linear", leave=False):
            compute_device = torch.device(device) if device is not None else target.weight.device
            [result] = compress_jobs(method, [LayerJob(target, spec, compute_device)])
            # No calibration tokens: nothing to measure an error on, unless the method did so itself.
            error = {} if result.error is None else {"recon_error": result.error}
            layers.append(measure_layer(target, spec, {**result.facts, **error}))
            if result.grid is not None:
                grids[target.name] = result.grid
    return CompressionReport(spec, layers, time.perf_counter() - start, quantized=grids)
