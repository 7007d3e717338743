"""Several models in one sweep (``--models A,B``): each model's points, with its own dense reference, under
a label that prefixes their ids; two models that resolve to the same weights are refused."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmkick_models.workflow.sweep_plan import SweepError, SweepGrid

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Where a model was found, not what it is: left out when two models are compared.
_LOCATION_KEYS = ("local_path", "path")


def model_labels(models: Sequence[str]) -> dict[str, str]:
    """Each model's label in point ids and the report: its last path part, file-system safe
    (``HuggingFaceTB/SmolLM2-135M`` -> ``SmolLM2-135M``; two of one name get ``-2``, ``-3``)."""
    labels: dict[str, str] = {}
    for model in models:
        if model in labels:
            raise SweepError(f"--models: {model} given twice")
        base = _UNSAFE.sub("_", Path(model.rstrip("/")).name) or "model"
        label, n = base, 1
        while label in labels.values():
            n += 1
            label = f"{base}-{n}"
        labels[model] = label
    return labels


def per_model(grid: SweepGrid, models: Sequence[str]) -> SweepGrid:
    """The grid once per model (dense first in each), every point naming its model."""
    labels = model_labels(models)
    points = [dataclasses.replace(p, pretrained=m, model=labels[m]) for m in models for p in grid.points]
    return SweepGrid(points, grid.notes)


def model_identities(models: Sequence[str], base_model_args: str) -> dict[str, Any]:
    """Each model's identity (as fingerprints record it); two --models that are the same weights (a local
    folder by content, a hub id by the commit it resolves to) are refused: their points would be the same
    points twice."""
    from lm_eval.utils import simple_parse_args_string

    from llmkick_models.workflow.fingerprints import model_identity

    base = simple_parse_args_string(base_model_args)
    seen: dict[str, str] = {}
    identities = {}
    for model in models:
        identities[model] = model_identity({**base, "pretrained": model})
        found = identities[model]
        identity = repr(
            {k: v for k, v in found.items() if k not in _LOCATION_KEYS} if isinstance(found, dict) else found
        )
        if identity in seen:
            raise SweepError(
                f"--models: {seen[identity]} and {model} resolve to the same weights ({identity}); give each "
                f"model once"
            )
        seen[identity] = model
    return identities
