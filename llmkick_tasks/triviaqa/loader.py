"""TriviaQA rc loader: the release files or the Hub, and the open-book evidence budget.

Document schema (both sources)::

    {"question_id": str, "question": str, "answer": str, "aliases": list[str], "evidence": str}

``answer`` is the canonical answer (``Answer.Value``), ``aliases`` every alias and normalized alias.
``evidence`` (open book only; empty for closed book) is the first Wikipedia entity page followed by the
first search result, cut to a token budget that fits the model's context (:class:`EvidenceBudget`).

The validation split is what LLM-KICK evaluated: ``web-dev.json`` then ``wikipedia-dev.json`` (the order of
``mandarjoshi/trivia_qa``'s rc validation split; a question in both files appears twice, as there).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import datasets

from llmkick_tasks.data_dir import (
    DataLayoutError,
    layout_error,
    load_hub_split,
    local_benchmark_dir,
    to_dataset,
)
from llmkick_tasks.model_tokenizer import context_length, load_tokenizer
from llmkick_tasks.run_metadata import EVIDENCE_TOKENS

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path


log = logging.getLogger(__name__)

BENCHMARK = "triviaqa"
HUB_DATASET = "mandarjoshi/trivia_qa"
DOMAINS = ("web", "wikipedia")  # file order of the rc validation split
EVIDENCE_KEY = EVIDENCE_TOKENS.name  # metadata knob of llmkick_triviaqa_open (default in its YAML too)
# Room kept free of evidence besides the question prompt: generation (== max_gen_toks of
# triviaqa_open.yaml, checked by the tests) and a margin for BOS / chat-template tokens.
MAX_GEN_TOKS = 32
MARGIN_TOKENS = 16
CHARS_PER_TOKEN = 4  # fallback when no tokenizer is known: English averages about 4 characters per token
OPEN_BOOK_QUESTION = "Based on these texts, answer these questions:\n\nQ: {question}\nA:"

FEATURES = datasets.Features(
    {
        "question_id": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "aliases": datasets.Sequence(datasets.Value("string")),
        "evidence": datasets.Value("string"),
    }
)


class RawDoc:
    """A TriviaQA question with its first evidence texts, before the evidence is cut to budget."""

    def __init__(
        self,
        question_id: str,
        question: str,
        answer: str,
        aliases: list[str],
        wiki_context: str = "",
        search_context: str = "",
    ) -> None:
        self.question_id = question_id
        self.question = question
        self.answer = answer
        self.aliases = aliases
        self.wiki_context = wiki_context
        self.search_context = search_context

    def to_doc(self, evidence: str = "") -> dict[str, Any]:
        """The task document (schema above)."""
        return {
            "question_id": self.question_id,
            "question": self.question,
            "answer": self.answer,
            "aliases": self.aliases,
            "evidence": evidence,
        }

    @property
    def evidence(self) -> str:
        """The uncut evidence: the first Wikipedia context, then the first search-result context."""
        return "\n\n".join(text for text in (self.wiki_context, self.search_context) if text)


def _aliases(answer: Mapping[str, Any]) -> list[str]:
    names = [answer.get("value") or answer.get("Value") or ""]
    for key in ("aliases", "Aliases", "normalized_aliases", "NormalizedAliases"):
        names.extend(answer.get(key) or [])
    return [name.strip() for name in dict.fromkeys(names) if name and name.strip()]


def _read_evidence(folder: Path, entries: list[Mapping[str, Any]], path_for_errors: Path) -> str:
    """Text of the first entry whose evidence file exists (missing files are skipped, as on the Hub)."""
    for entry in entries:
        filename = entry.get("Filename")
        if not filename:
            continue
        file = folder / filename
        if file.is_file():
            try:
                return file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as error:
                raise layout_error(BENCHMARK, file, f"cannot read ({type(error).__name__})") from error
        log.warning("%s: evidence file %s is missing, trying the next one", path_for_errors, file)
    return ""


def _check_not_swapped(path: Path, docs: list[RawDoc]) -> None:
    """Refuse a question file whose questions are no longer than their answers (fields swapped)."""
    if not docs:
        return
    short = sum(1 for doc in docs if len(doc.question.split()) <= len(doc.answer.split())) / len(docs)
    if short > 0.5:
        raise layout_error(
            BENCHMARK,
            path,
            f"Question and Answer look swapped: {short:.0%} of the questions are no longer than their "
            f"answer (first: Question={docs[0].question!r:.80}, Answer.Value={docs[0].answer!r:.80})",
        )


def read_release(folder: Path, split: str = "dev", with_evidence: bool = False) -> list[RawDoc]:
    """Questions of ``qa/{web,wikipedia}-{split}.json`` under ``folder``, with evidence when asked."""
    qa_files = [folder / "qa" / f"{domain}-{split}.json" for domain in DOMAINS]
    present = [path for path in qa_files if path.is_file()]
    if not present:
        raise layout_error(BENCHMARK, qa_files[0], f"no TriviaQA rc question file for the {split} split")
    for missing in set(qa_files) - set(present):
        log.warning("TriviaQA: %s is missing; using %s only", missing, ", ".join(map(str, present)))
    if with_evidence:
        for sub in DOMAINS:
            if not (folder / "evidence" / sub).is_dir():
                raise layout_error(
                    BENCHMARK, folder / "evidence" / sub, "evidence folder missing (open book)"
                )
    docs = []
    for path in present:
        try:
            with path.open(encoding="utf-8") as handle:
                records = json.load(handle)["Data"]
            first_of_file = len(docs)
            for record in records:
                aliases = _aliases(record["Answer"])
                if not (record["Answer"].get("Aliases") or record["Answer"].get("NormalizedAliases")):
                    # Every rc answer carries its aliases: without them this is not the release layout.
                    raise ValueError(
                        f"question {record.get('QuestionId')!r} has no Answer.Aliases / "
                        f"Answer.NormalizedAliases"
                    )
                doc = RawDoc(
                    record["QuestionId"],
                    record["Question"].strip(),
                    record["Answer"]["Value"].strip(),
                    aliases,
                )
                if with_evidence:
                    doc.wiki_context = _read_evidence(
                        folder / "evidence" / "wikipedia", record.get("EntityPages") or [], path
                    )
                    doc.search_context = _read_evidence(
                        folder / "evidence" / "web", record.get("SearchResults") or [], path
                    )
                docs.append(doc)
            _check_not_swapped(path, docs[first_of_file:])
        except DataLayoutError:
            raise
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise layout_error(
                BENCHMARK, path, f"not a TriviaQA rc question file ({type(error).__name__}: {error})"
            ) from error
    return docs


def _first(sequence: Mapping[str, list[str]] | None, key: str) -> str:
    values = (sequence or {}).get(key) or []
    return values[0].strip() if values else ""


def hub_raw_doc(row: Mapping[str, Any], with_evidence: bool) -> RawDoc:
    """The question of one ``mandarjoshi/trivia_qa`` row, with its first evidence texts when asked."""
    doc = RawDoc(
        row["question_id"],
        row["question"].strip(),
        row["answer"]["value"].strip(),
        _aliases(row["answer"]),
    )
    if with_evidence:
        doc.wiki_context = _first(row["entity_pages"], "wiki_context")
        doc.search_context = _first(row["search_results"], "search_context")
    return doc


def read_hub(with_evidence: bool) -> Iterator[RawDoc]:
    """Questions of ``mandarjoshi/trivia_qa`` rc validation (``rc.nocontext`` when no evidence is needed)."""
    dataset = load_hub_split(HUB_DATASET, "rc" if with_evidence else "rc.nocontext", "validation")
    for row in dataset:
        yield hub_raw_doc(row, with_evidence)


def read_docs(metadata: Mapping[str, Any], with_evidence: bool) -> Iterator[RawDoc] | list[RawDoc]:
    """Validation questions from the data dir of ``metadata``, else from the Hub."""
    folder = local_benchmark_dir(metadata, BENCHMARK)
    return read_hub(with_evidence) if folder is None else read_release(folder, "dev", with_evidence)


def load_closed_book(**metadata: Any) -> datasets.DatasetDict:
    """``custom_dataset`` of ``llmkick_triviaqa_closed``: the rc validation questions, no evidence."""
    docs = [doc.to_doc() for doc in read_docs(metadata, with_evidence=False)]
    return datasets.DatasetDict({"validation": to_dataset(docs, FEATURES)})


class EvidenceBudget:
    """Cuts open-book evidence to a TOKEN budget that leaves room for the question and the answer.

    The budget of a document is ``min(evidence_tokens, max_length - question prompt - MAX_GEN_TOKS -
    MARGIN_TOKENS)``, counted with the model's own tokenizer: a knob in tokens means the same amount of
    text relative to the model's context whatever its tokenizer, where LLM-KICK's fixed 3,072 characters
    overflow a 2k-context model with a verbose tokenizer and waste a long-context one.

    lm-eval gives ``custom_dataset`` the model arguments, so the tokenizer is found from ``tokenizer`` /
    ``pretrained`` / ``model`` and the context length from ``max_length`` or the model config (with
    lm-eval's own rule, ``resolve_max_length``).  When no tokenizer can be loaded (an API model without
    ``tokenizer=``, a model object passed from Python) the cut falls back to ``CHARS_PER_TOKEN`` characters
    per token of ``evidence_tokens``; lm-eval's left truncation still protects the question in that case.
    """

    def __init__(self, evidence_tokens: int, tokenizer: Any = None, max_length: int | None = None) -> None:
        if isinstance(evidence_tokens, bool) or not isinstance(evidence_tokens, int) or evidence_tokens < 0:
            raise ValueError(f"{EVIDENCE_KEY} must be a non-negative integer, got {evidence_tokens!r}")
        self.evidence_tokens = evidence_tokens
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> EvidenceBudget:
        """The budget for the model named in the task metadata (model args + ``--metadata``)."""
        # Checked by the constructor (Python callers build budgets directly); absent: the knob's default.
        evidence_tokens = metadata.get(EVIDENCE_KEY, EVIDENCE_TOKENS.default)
        tokenizer, max_length = _load_tokenizer(metadata)
        if tokenizer is not None and metadata.get("max_length"):  # max_length=... wins, as in HFLM
            max_length = int(metadata["max_length"])
        return cls(evidence_tokens, tokenizer, max_length)

    def tokens_for(self, question: str) -> int:
        """Evidence tokens allowed for one question."""
        if self.tokenizer is None or self.max_length is None:
            return self.evidence_tokens
        prompt = "\n\n" + OPEN_BOOK_QUESTION.format(question=question)
        used = len(self.tokenizer(prompt, verbose=False)["input_ids"]) + MAX_GEN_TOKS + MARGIN_TOKENS
        return max(0, min(self.evidence_tokens, self.max_length - used))

    def cut(self, text: str, tokens: int) -> str:
        """The longest prefix of ``text`` that has at most ``tokens`` tokens (at a token boundary)."""
        if tokens <= 0 or not text:
            return ""
        if self.tokenizer is None:
            return text[: tokens * CHARS_PER_TOKEN].rstrip()
        # Tokenize a window, not the whole page (Wikipedia pages run to 100k characters); widen it only
        # when the window holds fewer tokens than allowed and the text goes on.
        window = tokens * 8
        while True:
            piece = text[:window]
            if getattr(self.tokenizer, "is_fast", False):
                offsets = self.tokenizer(
                    piece, add_special_tokens=False, return_offsets_mapping=True, verbose=False
                )["offset_mapping"]
                if len(offsets) > tokens:
                    return piece[: offsets[tokens - 1][1]].rstrip()
            else:
                ids = self.tokenizer(piece, add_special_tokens=False, verbose=False)["input_ids"]
                if len(ids) > tokens:
                    return self.tokenizer.decode(ids[:tokens]).rstrip()
            if window >= len(text):
                return text.rstrip()
            window *= 2

    def describe(self) -> str:
        """One line for the log."""
        if self.tokenizer is None:
            return f"no tokenizer known: evidence cut to {self.evidence_tokens * CHARS_PER_TOKEN} characters"
        name = getattr(self.tokenizer, "name_or_path", type(self.tokenizer).__name__)
        return f"evidence cut to <= {self.evidence_tokens} tokens of {name}, context {self.max_length}"


def _load_tokenizer(metadata: Mapping[str, Any]) -> tuple[Any, int | None]:
    """(tokenizer, context length) of the model named in ``metadata``, or ``(None, None)``.

    The tokenizer comes from ``tokenizer``, else ``pretrained``, else ``model``; the context length from
    the config of ``pretrained`` / ``model`` (see :mod:`llmkick_tasks.model_tokenizer`).
    """
    tokenizer = load_tokenizer(metadata, "TriviaQA open book")
    if tokenizer is None:
        return None, None
    return tokenizer, context_length(metadata, tokenizer)


def load_open_book(**metadata: Any) -> datasets.DatasetDict:
    """``custom_dataset`` of ``llmkick_triviaqa_open``: rc validation questions with budgeted evidence."""
    budget = EvidenceBudget.from_metadata(metadata)
    log.info("llmkick_triviaqa_open: %s", budget.describe())
    docs = []
    for raw in read_docs(metadata, with_evidence=True):
        docs.append(raw.to_doc(budget.cut(raw.evidence, budget.tokens_for(raw.question))))
    return datasets.DatasetDict({"validation": to_dataset(docs, FEATURES)})
