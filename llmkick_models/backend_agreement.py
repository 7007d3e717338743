"""How far two lm-eval runs on the same compressed weights agree (compressed-hf against compressed-vllm).

Both inputs are lm-eval's logged samples of one task (``results["samples"][task]``).  Generations are
compared per document; log-likelihoods per request, as the absolute difference divided by the
continuation's token count.  A difference says why it is one:

* ``partial character``: the same tokens, but the last one ends inside a UTF-8 character; HF's ``decode``
  writes it as U+FFFD, vLLM's incremental detokenizer holds the incomplete bytes back.  Counted as agreeing
  (the model produced the same tokens), and listed;
* ``diverged at character N``: greedy decoding took another token there, a near-tie that the two kernels'
  rounding (attention, matmul order) decided differently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

REPLACEMENT = "\ufffd"


@dataclass
class Difference:
    """One document whose outputs differ between the two backends."""

    doc_id: int
    first: str
    second: str
    why: str


@dataclass
class GenerationAgreement:
    """Greedy generations of one task compared document by document."""

    documents: int = 0
    identical: int = 0
    differences: list[Difference] = field(default_factory=list)

    @property
    def agreeing(self) -> int:
        """Documents with the same tokens (identical text, or differing only by a held-back partial char)."""
        return self.identical + sum(d.why == "partial character" for d in self.differences)

    @property
    def rate(self) -> float:
        """Share of documents that agree."""
        return self.agreeing / self.documents if self.documents else float("nan")


def _by_doc(samples: Sequence[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {sample["doc_id"]: sample for sample in samples}


def _paired(
    first: Sequence[dict[str, Any]], second: Sequence[dict[str, Any]]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    a, b = _by_doc(first), _by_doc(second)
    if a.keys() != b.keys():
        raise ValueError(
            f"the runs scored different documents ({len(a)} and {len(b)}; compare equal --limit)"
        )
    return [(a[doc], b[doc]) for doc in sorted(a)]


def compare_generations(
    first: Sequence[dict[str, Any]], second: Sequence[dict[str, Any]]
) -> GenerationAgreement:
    """Compare the filtered generations of a ``generate_until`` task's samples, document by document."""
    result = GenerationAgreement()
    for a, b in _paired(first, second):
        result.documents += 1
        text_a, text_b = str(a["filtered_resps"][0]), str(b["filtered_resps"][0])
        if text_a == text_b:
            result.identical += 1
            continue
        if text_a.rstrip(REPLACEMENT) == text_b.rstrip(REPLACEMENT):
            why = "partial character"
        else:
            at = next((i for i, (x, y) in enumerate(zip(text_a, text_b, strict=False)) if x != y),
                      min(len(text_a), len(text_b)))  # fmt: skip
            why = f"diverged at character {at}"
        result.differences.append(Difference(a["doc_id"], text_a, text_b, why))
    return result


def loglikelihood_gaps(
    first: Sequence[dict[str, Any]], second: Sequence[dict[str, Any]], count_tokens: Callable[[str], int]
) -> list[float]:
    """Per request of a loglikelihood task: |difference of the log-likelihoods| / continuation tokens
    (``count_tokens`` of the continuation text, at least 1)."""
    gaps = []
    for a, b in _paired(first, second):
        for (_context, continuation), response_a, response_b in zip(
            a["arguments"], a["resps"], b["resps"], strict=True
        ):
            difference = abs(float(response_a[0][0]) - float(response_b[0][0]))
            gaps.append(difference / max(1, count_tokens(continuation)))
    return gaps
