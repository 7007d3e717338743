"""Hermetic test data for the llmkick tasks, written in the ORIGINAL release formats, and a scripted LM.

``write_data_dir(root)`` creates ``root/{freebaseqa,mmlu,triviaqa}`` exactly as the releases lay them out
(FreebaseQA JSON / .tab / .txt, Hendrycks MMLU CSVs, TriviaQA rc ``qa/*.json`` + ``evidence/``).  The
FreebaseQA eval and TriviaQA dev questions come with the continuation the scripted LM returns for them and
the scores each metric must give, worked out by hand (see the comments), so the end-to-end tests assert
exact numbers.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lm_eval.api.instance import Instance
from lm_eval.api.model import LM

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TASKS_DIR = PROJECT_ROOT / "llmkick_tasks"

# ----------------------------------------------------------------------------------------------- FreebaseQA
# (question id, question, aliases, scripted continuation, contains, exact_match)
FREEBASEQA_EVAL = [
    ("fq-0", "Who wrote Hamlet?", ["William Shakespeare", "Shakespeare"], " William Shakespeare", 1, 1),
    # first sentence is the answer
    ("fq-1", "What is the capital of France?", ["Paris"], " Paris. It is also the largest city.", 1, 1),
    # alias inside a longer answer: contained, not exact
    ("fq-2", "Which planet is known as the Red Planet?", ["Mars"], " the planet Mars, after the god", 1, 0),
    # answer on the second line: contained (whole continuation), first line is not it
    ("fq-3", "Who painted the Mona Lisa?", ["Leonardo da Vinci"], " a painter\nLeonardo da Vinci", 1, 0),
    # empty continuation
    ("fq-4", "In which country is the city of Timbuktu?", ["Mali"], "", 0, 0),
    # the alias is in the QUESTION, not in the answer: the original scored prompt + answer and counted it
    ("fq-5", "Which Shakespeare play features Hamlet, Prince of Denmark?", ["Hamlet"], " Macbeth", 0, 0),
    # case differs
    ("fq-6", "What is the chemical symbol for gold?", ["Au"], " AU", 1, 1),
    # spaces differ: the paper's squashing matches, strict EM does not
    ("fq-7", "Who was the first man on the Moon?", ["Neil Armstrong"], " NeilArmstrong", 1, 0),
]
FREEBASEQA_EXPECTED = {"contains": 6 / 8, "exact_match": 3 / 8}

FREEBASEQA_TRAIN = [
    ("tr-0", "Which element has atomic number 1?", ["Hydrogen"]),
    ("tr-1", "What is the largest ocean on Earth?", ["Pacific Ocean", "Pacific"]),
    ("tr-2", "Who composed the Moonlight Sonata?", ["Ludwig van Beethoven", "Beethoven"]),
]

# The dev split in .tab and .txt only, with the release's quirks: (question as written in the file, question,
# aliases).  Literal quotes, a CSV-quoted question with doubled quotes, a literal quote at the start that
# is NOT CSV quoting, one row per alias, and (in .txt) a malformed line.
FREEBASEQA_DEV = [
    (
        'Who composed the "1812 Overture"?',
        'Who composed the "1812 Overture"?',
        ["Tchaikovsky", "P. I. Tchaikovsky"],
    ),
    (
        '"Which jockey rode 50/1 outsider ""Last Suspect"" to victory?"',
        'Which jockey rode 50/1 outsider "Last Suspect" to victory?',
        ["hywel davies"],
    ),
    (
        '"Belshazzar\'s Feast" was a work by which British composer?',
        '"Belshazzar\'s Feast" was a work by which British composer?',
        ["walton", "William Walton"],
    ),
    ("What is the US state capital of Kansas?", "What is the US state capital of Kansas?", ["topeka"]),
]


def _freebaseqa_json(split: str, rows: list[tuple[str, str, list[str]]]) -> dict[str, Any]:
    questions = []
    for number, (question_id, question, aliases) in enumerate(rows):
        # One parse per alias: the loader must collect AnswersName over every parse.
        parses = [
            {
                "Parse-Id": f"{question_id}.P{index}",
                "PotentialTopicEntityMention": "x",
                "TopicEntityName": "x",
                "TopicEntityMid": "m.0",
                "InferentialChain": "x.y",
                "Answers": [{"AnswersMid": f"m.{number}{index}", "AnswersName": [alias]}],
            }
            for index, alias in enumerate(aliases)
        ]
        questions.append(
            {
                "Question-ID": question_id,
                "RawQuestion": question,
                "ProcessedQuestion": question.lower().rstrip("?"),
                "Parses": parses,
            }
        )
    return {"Dataset": f"FreebaseQA-{split}", "Version": "1.0", "Questions": questions}


def write_freebaseqa(root: Path) -> Path:
    """``root/freebaseqa`` with eval and train as JSON, dev as .tab and .txt."""
    folder = root / "freebaseqa"
    folder.mkdir(parents=True)
    eval_rows = [(qid, question, aliases) for qid, question, aliases, *_ in FREEBASEQA_EVAL]
    (folder / "FreebaseQA-eval.json").write_text(json.dumps(_freebaseqa_json("eval", eval_rows)))
    (folder / "FreebaseQA-train.json").write_text(json.dumps(_freebaseqa_json("train", FREEBASEQA_TRAIN)))
    tab_lines, txt_lines = [], ["85326 | whose film debut was jennings in revenge of the creature 1955 "]
    for raw, _question, aliases in FREEBASEQA_DEV:
        for alias in aliases:
            fields = ["Topic", "topic", "m.0t", "film.film.x", "null", "m.0a", alias, raw]
            tab_lines.append("\t".join(fields))
            txt_lines.append(f"{raw} | {alias} ")
    (folder / "FreebaseQA-dev.tab").write_text("\n".join(tab_lines) + "\n")
    (folder / "FreebaseQA-dev.txt").write_text("\n".join(txt_lines) + "\n")
    return folder


# ----------------------------------------------------------------------------------------------------- MMLU
MMLU_TEST_ROWS = 2  # per subject
MMLU_LETTERS = "ABCD"


def mmlu_gold(subject_index: int, row: int) -> int:
    """Gold option of fixture test row ``row`` of the ``subject_index``-th subject (varies over A-D)."""
    return (subject_index + row) % 4


def write_mmlu(root: Path) -> Path:
    """``root/mmlu/{dev,val,test}/<subject>_<split>.csv`` for all 57 subjects (5 dev, 1 val, 2 test rows)."""
    from llmkick_tasks.mmlu.utils import SUBJECTS

    folder = root / "mmlu"
    sizes = {"dev": 5, "val": 1, "test": MMLU_TEST_ROWS}
    for split in sizes:
        (folder / split).mkdir(parents=True)
    for index, subject in enumerate(SUBJECTS):
        for split, size in sizes.items():
            with (folder / split / f"{subject}_{split}.csv").open(
                "w", newline="", encoding="utf-8"
            ) as handle:
                writer = csv.writer(handle)
                for row in range(size):
                    gold = mmlu_gold(index, row)
                    # A comma and a newline inside a field: the CSV quoting must survive.
                    question = f"{subject} {split} question {row}, which option?\n(one line more)"
                    writer.writerow([question, *(f"option {c} of {row}" for c in "abcd"), MMLU_LETTERS[gold]])
    return folder


# ------------------------------------------------------------------------------------------------- TriviaQA
# (question id, domain, question, value, aliases, scripted continuation, exact_match, f1, lenient_match)
TRIVIAQA_DEV = [
    ("tq-0", "web", "What is the capital of France?", "Paris", ["Paris", "Paris, France"],
     " Paris\nQ: x", 1, 1, 1),
    # typographic apostrophe in the alias, ASCII in the answer; trailing punctuation
    ("tq-1", "web", "Which band recorded Appetite for Destruction?", "Guns N’ Roses", ["Guns N’ Roses"],
     " Guns N' Roses!", 1, 1, 1),
    # longer answer: F1 = 2 * (2/4 * 2/2) / (2/4 + 2/2) = 2/3; the alias is contained
    ("tq-2", "wikipedia", "Which Lloyd Webber musical premiered in 1993?", "Sunset Boulevard",
     ["Sunset Boulevard", "Sunset Blvd"], " It was Sunset Boulevard", 0, 2 / 3, 1),
    # partial answer: F1 = 2 * (1 * 1/3) / (1 + 1/3) = 1/2; the answer is inside the alias
    ("tq-3", "wikipedia", "Who followed Arthur Balfour as Prime Minister?", "Henry Campbell-Bannerman",
     ["Henry Campbell-Bannerman"], " Campbell", 0, 1 / 2, 1),
    # empty first line: wrong for every metric (the original lenient match counted it right)
    ("tq-4", "web", "Who was the man behind The Chipmunks?", "David Seville", ["David Seville"],
     "\n", 0, 0, 0),
]  # fmt: skip
TRIVIAQA_EXPECTED = {"exact_match": 2 / 5, "f1": (1 + 1 + 2 / 3 + 1 / 2 + 0) / 5, "lenient_match": 4 / 5}
TRIVIAQA_WIKI_TEXT = "Wiki page about {qid}. " * 40
TRIVIAQA_WEB_TEXT = "Search result about {qid}. " * 40


def write_triviaqa(root: Path, folder_name: str = "triviaqa") -> Path:
    """``root/<folder_name>/qa/{web,wikipedia}-{dev,train}.json`` and ``evidence/{wikipedia,web}/``."""
    folder = root / folder_name
    for sub in ("qa", "evidence/wikipedia", "evidence/web/7"):
        (folder / sub).mkdir(parents=True)
    data: dict[str, list[dict[str, Any]]] = {"web": [], "wikipedia": []}
    for qid, domain, question, value, aliases, *_ in TRIVIAQA_DEV:
        (folder / "evidence" / "wikipedia" / f"{qid}.txt").write_text(
            TRIVIAQA_WIKI_TEXT.format(qid=qid) + "\n"
        )
        record: dict[str, Any] = {
            "Answer": {
                "Aliases": aliases,
                "NormalizedAliases": [alias.lower() for alias in aliases],
                "NormalizedValue": value.lower(),
                "Type": "WikipediaEntity",
                "Value": value,
            },
            # a missing page first: the loader must skip it, as the Hub loader does
            "EntityPages": [
                {"DocSource": "TagMe", "Filename": "Missing_Page.txt", "Title": "Missing"},
                {"DocSource": "TagMe", "Filename": f"{qid}.txt", "Title": qid},
            ],
            "Question": question,
            "QuestionId": qid,
            "QuestionSource": "http://www.example.org/",
        }
        if domain == "web":
            (folder / "evidence" / "web" / "7" / f"{qid}.txt").write_text(TRIVIAQA_WEB_TEXT.format(qid=qid))
            record["SearchResults"] = [
                {"Description": "d", "Filename": f"7/{qid}.txt", "Rank": 0, "Title": "t", "Url": "u"}
            ]
        data[domain].append(record)
    for domain, records in data.items():
        for split, rows in (("dev", records), ("train", records[:1])):
            content = {
                "Data": rows,
                "Domain": domain.title(),
                "Split": split,
                "VerifiedEval": False,
                "Version": 1.0,
            }
            (folder / "qa" / f"{domain}-{split}.json").write_text(json.dumps(content, indent=1))
    return folder


def triviaqa_validation_order() -> list[str]:
    """Question ids in rc validation order: web-dev, then wikipedia-dev."""
    return [row[0] for row in TRIVIAQA_DEV if row[1] == "web"] + [
        row[0] for row in TRIVIAQA_DEV if row[1] == "wikipedia"
    ]


def write_data_dir(root: Path) -> Path:
    """A complete llmkick data dir under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    write_freebaseqa(root)
    write_mmlu(root)
    write_triviaqa(root)
    return root


# ------------------------------------------------------------------------------------------------ Scripted LM
class ScriptedLM(LM):
    """An lm-eval LM whose answers are scripted per document, to test scoring end to end.

    ``generate`` maps a request to its continuation; ``loglikelihood`` maps a request to its score.
    Every prompt is recorded in ``prompts`` (task name -> list of contexts).
    """

    def __init__(
        self,
        generate: Callable[[Instance], str] | None = None,
        loglikelihood: Callable[[Instance], float] | None = None,
    ) -> None:
        super().__init__()
        self._generate = generate
        self._loglikelihood = loglikelihood
        self.prompts: dict[str, list[str]] = {}

    def _record(self, request: Instance) -> None:
        self.prompts.setdefault(request.task_name, []).append(request.args[0])

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        for request in requests:
            self._record(request)
        assert self._generate is not None, "this scripted LM does not generate"
        return [self._generate(request) for request in requests]

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        for request in requests:
            self._record(request)
        assert self._loglikelihood is not None, "this scripted LM has no loglikelihoods"
        return [(self._loglikelihood(request), False) for request in requests]

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError("no llmkick exact-match task asks for rolling loglikelihoods")


def task_manager(metadata: dict[str, Any]) -> Any:
    """A TaskManager that indexes only the llmkick tasks (fast), with ``metadata`` for every task."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=False, include_path=str(TASKS_DIR), metadata=metadata)


def evaluate(lm: LM, tasks: list[str], metadata: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """``simple_evaluate`` with the llmkick tasks only and no bootstrap."""
    from lm_eval import simple_evaluate

    return simple_evaluate(
        model=lm, tasks=tasks, task_manager=task_manager(metadata), bootstrap_iters=0, **kwargs
    )


def lm_eval_cli(model_args: str, task_dir: Path, output: Path) -> tuple[dict[str, Any], str]:
    """Run ``lm_eval --model compressed-hf`` on the local fixture task (2 documents) in a new process; its
    results JSON and its stderr."""
    command = [
        sys.executable, "-m", "lm_eval", "--model", "compressed-hf", "--model_args", model_args,
        "--tasks", "local_fixture_choice", "--include_path", str(task_dir),
        "--device", "cpu", "--limit", "2", "--output_path", str(output),
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(next(output.rglob("results_*.json")).read_text()), run.stderr
