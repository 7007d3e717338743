"""lm-eval entry points of ``llmkick_summarization``: the YAML's ``class:`` and ``custom_dataset``.

The CNN/DailyMail stories are loaded by :mod:`llmkick_tasks.summarization.stories`;
the judging is :mod:`llmkick_tasks.judge`.
"""

from llmkick_tasks.judge.task import SummarizationTask
from llmkick_tasks.summarization.stories import (
    length_bin,
    load_summarization,
    parse_story,
    select_stories,
)

__all__ = ["SummarizationTask", "length_bin", "load_summarization", "parse_story", "select_stories"]
