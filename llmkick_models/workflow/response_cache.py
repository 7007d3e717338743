"""A sweep point's lm-eval response cache: one folder per fingerprint digest, so that a point resumes
without generating again only what was computed with its own settings."""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

from llmkick_models.workflow.fingerprints import fingerprint_digest
from llmkick_models.workflow.preflight import SweepPlan
from llmkick_models.workflow.sweep_plan import SweepPoint

#: Per point: lm-eval's response cache (one folder per fingerprint digest).
RESPONSES_DIR = "responses"


def response_cache(plan: SweepPlan, point: SweepPoint, point_dir: Path, options: argparse.Namespace) -> Path:
    """The folder of the point's lm-eval response cache, named by the digest of its fingerprint: in the
    point folder (``responses/<digest>``), or under the user's ``--use_cache`` folder
    (``<use_cache>/<point id>/<digest>``: one cache for every point would replay one model's answers as
    another's)."""
    root = (
        Path(options.use_cache).expanduser() / point.point_id
        if options.use_cache
        else point_dir / RESPONSES_DIR
    )
    return root / fingerprint_digest(plan.fingerprints[point.point_id])


def drop_other_caches(cache: Path) -> None:
    """Remove the point's response caches of other settings: their answers must never be replayed.  Only
    folders named like a digest go (a user's --use_cache folder may hold other things)."""
    if cache.parent.is_dir():
        for folder in cache.parent.iterdir():
            if (
                folder != cache
                and folder.is_dir()
                and re.fullmatch(rf"[0-9a-f]{{{len(cache.name)}}}", folder.name)
            ):
                shutil.rmtree(folder)


def kept_answers(generations: Path, options: argparse.Namespace) -> str:
    """For a failed point's line: where the generated answers are, and that a re-run does not redo them."""
    files = sorted(generations.glob("*.jsonl"))
    if not files:
        return ""
    sampled = str((options.gen_kwargs or {}).get("do_sample", "")).lower() == "true"
    resume = (
        "re-running the sweep generates them again (lm-eval caches no sampled answers, do_sample=true)"
        if sampled
        else "re-running the sweep resumes from lm-eval's response cache without generating them again"
    )
    return f"; the generated answers are kept in {generations} ({', '.join(f.name for f in files)}): {resume}"
