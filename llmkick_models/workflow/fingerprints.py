"""A sweep point's fingerprint: everything that determines its numbers (model identity, model_args, lm-eval
options, data, the code and library versions), how two fingerprints differ, and the digest that names a
point's response cache.  A finished point is reused only while its fingerprint is the plan's."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmkick_models.workflow.sweep_plan import CACHE_ARGS, COSMETIC_LM_EVAL_OPTIONS, SweepPoint, point_args

#: The part of a point's fingerprint.json that is recorded but never compared.
PROVENANCE_KEY = "provenance"


def _listing_digest(folder: Path) -> dict[str, Any]:
    """A folder's identity without reading every byte: each file's relative name, size and mtime."""
    digest = hashlib.sha256()
    count = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
        count += 1
    return {"path": str(folder.resolve()), "files": count, "listing_sha256": digest.hexdigest()}


def _path_identity(value: Any) -> Any:
    """A local file or folder by content (small files) or listing; anything else as given."""
    from llmkick_models.storage.cache_key import describe_source

    if isinstance(value, (list, tuple)):
        return [_path_identity(v) for v in value]
    if not isinstance(value, str) or not value or not Path(value).expanduser().exists():
        return value
    path = Path(value).expanduser()
    if path.is_dir() and sum(1 for _ in path.rglob("*")) > 2000:  # e.g. a data dir with evidence files
        return _listing_digest(path)
    return describe_source(str(path))


def model_identity(base: dict[str, Any]) -> Any:
    """A local model folder by content, a hub id by the commit it resolves to (as the model cache does)."""
    from llmkick_models.storage.cache_key import describe_source

    pretrained = str(base.get("pretrained"))
    if Path(pretrained).expanduser().exists():
        return _path_identity(pretrained)
    revision = base.get("revision")
    source = describe_source(
        pretrained, str(revision) if revision else None, hub_cache_dir=base.get("cache_dir")
    )
    return {k: v for k, v in source.items() if v is not None}


def _data_dir(namespace: Any, base_model_args: str) -> str | None:
    from lm_eval.utils import simple_parse_args_string

    from llmkick_tasks.data_dir import ENV_VAR, METADATA_KEY

    metadata = simple_parse_args_string(base_model_args) | (namespace.metadata or {})
    return metadata.get(METADATA_KEY) or os.environ.get(ENV_VAR) or None


def _llmkick_source_digest() -> str:
    """sha256 of llmkick's own code, task YAMLs and templates: an editable install keeps its version number
    while its prompts and metrics change."""
    import llmkick_models
    import llmkick_tasks

    digest = hashlib.sha256()
    for package in (llmkick_models, llmkick_tasks):
        root = Path(package.__file__).parent
        for path in sorted(root.rglob("*")):
            if "__pycache__" in path.parts or "workflow" in path.relative_to(root).parts:
                continue  # the sweep/report code itself does not change a point's numbers
            if path.is_file() and path.suffix not in (".pyc", ".md"):
                digest.update(f"{path.relative_to(root.parent)}\0".encode() + path.read_bytes())
    return digest.hexdigest()


#: The libraries whose versions change a point's numbers besides llmkick's own code: lm-eval (requests,
#: metrics), torch (kernels), transformers (model code, tokenizers, generation) and accelerate (placement).
STACK_PACKAGES = ("lm_eval", "torch", "transformers", "accelerate")
#: Every field of a fingerprint's ``versions``, in the order the report shows them.
VERSION_FIELDS = ("llmkick", "llmkick_source_sha256", *STACK_PACKAGES)


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _versions() -> dict[str, str]:
    from llmkick_models.storage.cache_key import llmkick_version

    return {
        "llmkick": llmkick_version(),
        "llmkick_source_sha256": _llmkick_source_digest(),
        **{name: _package_version(name) for name in STACK_PACKAGES},
    }


def _environment() -> dict[str, str]:
    """The environment variables that change a point's numbers, as the point's lm-eval will read them (it
    inherits the sweep's environment): ``$LLMKICK_SCORING`` (chunked or full-logits scoring differ in the
    last digits), resolved so that unset and its default are the same setting; a bad value fails here."""
    from llmkick_models.logits_budget import SCORING_ENV, scoring_method

    return {SCORING_ENV: scoring_method()}


def common_fingerprint(base_model_args: str, tasks: str, namespace: Any, config: Any) -> dict[str, Any]:
    """What determines every point's numbers besides the point itself."""
    from lm_eval.utils import simple_parse_args_string

    defaults = asdict(type(config)())
    options: dict[str, Any] = {}
    for key, value in asdict(config).items():
        if key in COSMETIC_LM_EVAL_OPTIONS or value == defaults.get(key):
            continue
        if key == "device" and isinstance(value, str):
            value = value.split(":")[0]  # cuda:0 vs cuda:1 computes the same numbers
        if key == "include_path":
            value = _path_identity(value)
        options[key] = value
    metadata = {k: v for k, v in (namespace.metadata or {}).items() if k != "data_dir"}
    if metadata:
        options["metadata"] = metadata
    base = simple_parse_args_string(base_model_args)
    data_dir = _data_dir(namespace, base_model_args)
    return {
        "model": model_identity(base) if "pretrained" in base else None,  # --models: per point
        "tasks": sorted(t.strip() for t in tasks.split(",") if t.strip()),
        "lm_eval_options": json.loads(json.dumps(options, sort_keys=True, default=str)),
        "data_dir": _path_identity(data_dir) if data_dir else None,
        "environment": _environment(),
        "versions": _versions(),
    }


def point_fingerprint(
    point: SweepPoint,
    common: dict[str, Any],
    base_model_args: str,
    compress_args: dict[str, str],
    models: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The point's full fingerprint: its model_args (parsed, sorted), the calibration file and the rest;
    in a --models run, its own model's identity (``models``: each model's :func:`model_identity`)."""
    from lm_eval.utils import simple_parse_args_string

    args = simple_parse_args_string(point_args(point, base_model_args, compress_args))
    model_args = {k: str(v) for k, v in sorted(args.items()) if k not in CACHE_ARGS}
    fingerprint = {"point": point.point_id, "model_args": model_args, **common}
    if point.pretrained:
        fingerprint["model"] = (models or {}).get(point.pretrained) or model_identity(args)
    calibration = args.get("calibration")
    if isinstance(calibration, str) and Path(calibration).expanduser().exists():
        fingerprint["calibration_file"] = _path_identity(calibration)
    return fingerprint


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): data}


def _compared(fingerprint: dict[str, Any]) -> dict[str, Any]:
    # The provenance is what may differ between the points of one sweep on purpose (the CPU threads of its
    # worker: a --parallel N sweep and a sequential one resume each other): recorded, shown, not compared.
    return {key: value for key, value in fingerprint.items() if key != PROVENANCE_KEY}


def _shown(flat: dict[str, Any], key: str) -> str:
    return repr(flat[key]) if key in flat else "(absent)"


def fingerprint_changes(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """Human-readable differences, e.g. ``model_args.pretrained: 'A' -> 'B'`` or, for a field an older
    llmkick did not record, ``versions.torch: (absent) -> '2.4.0'``; the provenance is not compared."""
    if old is None:
        return ["no fingerprint (written by an older llmkick, or the point was copied in)"]
    before, after = _flatten(_compared(old)), _flatten(_compared(new))
    return [
        f"{key}: {_shown(before, key)} -> {_shown(after, key)}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]


def fingerprint_digest(fingerprint: dict[str, Any]) -> str:
    """A short digest of everything a fingerprint compares: names the point's lm-eval response cache, so
    a point whose settings changed can never replay answers computed with other ones."""
    text = json.dumps(_compared(fingerprint), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
