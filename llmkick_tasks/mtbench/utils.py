"""lm-eval entry points of ``llmkick_mtbench``: the YAML's ``class:`` and ``custom_dataset``.

The MT-Bench conversations are loaded by :mod:`llmkick_tasks.mtbench.questions`;
the judging is :mod:`llmkick_tasks.judge`.
"""

from llmkick_tasks.judge.task import MTBenchTask
from llmkick_tasks.mtbench.questions import load_mtbench, parse_questions

__all__ = ["MTBenchTask", "load_mtbench", "parse_questions"]
