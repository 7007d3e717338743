"""The ``llmkick upstream-tasks`` and ``llmkick upstream-score`` subcommands: the lm-eval pull-request folder
(:mod:`.upstream_tasks`) and its offline scoring without llmkick (:mod:`.upstream_offline`)."""

from __future__ import annotations

import argparse
from pathlib import Path

UPSTREAM_COMMANDS = ("upstream-tasks", "upstream-score")


def add_upstream_commands(commands: argparse._SubParsersAction) -> None:
    """Add both subcommands' parsers to ``commands``."""
    upstream = commands.add_parser(
        "upstream-tasks",
        help="write the exact-match tasks as an lm-eval pull-request folder (lm_eval/tasks/llmkick)",
    )
    upstream.add_argument("dir", type=Path, help="a new or empty folder")
    upstream.add_argument(
        "--results",
        type=Path,
        action="append",
        help="an lm-eval results JSON for the README's results (repeatable; default: the recorded runs)",
    )
    upstream.add_argument("--results_note", help="a sentence above the results tables (what the model is)")
    score = commands.add_parser(
        "upstream-score",
        help="score the pull-request folder offline, without llmkick: WORK --data_dir D -- <lm_eval args>",
    )
    score.add_argument("work", type=Path, help="a new or empty folder (tree, Hub-layout data, results)")
    score.add_argument("--data_dir", type=Path, required=True, help="a data dir in the release layout")


def upstream_command(args: argparse.Namespace, lm_eval_args: list[str]) -> int:
    """Run ``upstream-tasks`` or ``upstream-score`` (whose ``lm_eval_args`` followed ``--``)."""
    if args.command == "upstream-tasks":
        from llmkick_models.workflow.upstream_readme import RECORDED_RESULTS
        from llmkick_models.workflow.upstream_tasks import write_upstream_folder

        written = write_upstream_folder(args.dir, args.results or RECORDED_RESULTS, args.results_note)
        print(f"llmkick upstream-tasks: wrote {len(written)} files into {args.dir}")
        return 0
    from llmkick_models.workflow.upstream_offline import score_offline

    results = score_offline(args.work, args.data_dir, lm_eval_args)
    print(
        f"llmkick upstream-score: results in {results}\n"
        f"fill the folder's README with: llmkick upstream-tasks DIR --results {results}"
    )
    return 0
