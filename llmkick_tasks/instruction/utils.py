"""lm-eval entry points of ``llmkick_instruction_vicuna80``: the YAML's ``class:`` and ``custom_dataset``.

The Vicuna-80 questions are loaded by :mod:`llmkick_tasks.instruction.questions`;
the judging is :mod:`llmkick_tasks.judge`.
"""

from llmkick_tasks.instruction.questions import load_vicuna80, parse_questions
from llmkick_tasks.judge.task import InstructionTask

__all__ = ["InstructionTask", "load_vicuna80", "parse_questions"]
