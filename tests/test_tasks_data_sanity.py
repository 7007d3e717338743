"""Layout parsers refuse files whose columns are swapped or shifted, naming the file and the layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmkick_tasks.data_dir import DataLayoutError
from llmkick_tasks.freebaseqa import loader as freebaseqa
from llmkick_tasks.mmlu import utils as mmlu
from llmkick_tasks.triviaqa.release import release_rows

PAIRS = [
    ("Who wrote the play Hamlet?", "William Shakespeare"),
    ("What is the capital city of France?", "Paris"),
    ("Which planet is known as the Red Planet?", "Mars"),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci"),
]


def test_swapped_freebaseqa_txt_is_refused(tmp_path: Path) -> None:
    good = tmp_path / "FreebaseQA-dev.txt"
    good.write_text("".join(f"{q} | {a}\n" for q, a in PAIRS))
    assert [d["answers"] for d in freebaseqa.parse_txt(good)] == [[a] for _, a in PAIRS]
    swapped = tmp_path / "swapped" / "FreebaseQA-dev.txt"
    swapped.parent.mkdir()
    swapped.write_text("".join(f"{a} | {q}\n" for q, a in PAIRS))
    with pytest.raises(DataLayoutError) as error:
        freebaseqa.parse_txt(swapped)
    message = str(error.value)
    assert str(swapped) in message and "swapped or shifted" in message
    assert "100% of the answers end with '?'" in message
    assert "'question | answer' lines, the question first" in message
    assert "freebaseqa/FreebaseQA-{split}.txt" in message  # the layout block of the data dir


def _tab_line(question: str, answer: str) -> str:
    return "\t".join(["subj", "name", "m.0abc", "pred", "", "m.0xyz12", answer, question]) + "\n"


def test_swapped_or_shifted_freebaseqa_tab_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "FreebaseQA-dev.tab"
    path.write_text("".join(_tab_line(q, a) for q, a in PAIRS))
    assert len(freebaseqa.parse_tab(path)) == len(PAIRS)
    path.write_text("".join(_tab_line(a, q) for q, a in PAIRS))
    with pytest.raises(DataLayoutError, match="swapped or shifted"):
        freebaseqa.parse_tab(path)
    # shifted one field to the right (the question fell off): the answer column holds the answer's mid
    shifted = ["\t".join(["subj", "name", "m.0abc", "pred", "", "", "m.0xyz12", a]) + "\n" for _, a in PAIRS]
    path.write_text("".join(shifted))
    with pytest.raises(DataLayoutError, match=r"Freebase ids"):
        freebaseqa.parse_tab(path)


def test_swapped_freebaseqa_json_is_refused(tmp_path: Path) -> None:
    questions = [
        {"Question-ID": f"q{i}", "RawQuestion": a, "Parses": [{"Answers": [{"AnswersName": [q]}]}]}
        for i, (q, a) in enumerate(PAIRS)
    ]
    path = tmp_path / "FreebaseQA-eval.json"
    path.write_text(json.dumps({"Questions": questions}))
    with pytest.raises(DataLayoutError, match="RawQuestion = the question"):
        freebaseqa.parse_json(path)


def test_real_freebaseqa_file_swapped_is_refused(shared_data: Path, tmp_path: Path) -> None:
    lines = (shared_data / "freebaseqa" / "FreebaseQA-dev.txt").read_text(encoding="utf-8").splitlines()[:300]
    swapped = []
    for line in lines:
        question, _, answer = line.rpartition("|")
        swapped.append(f"{answer.strip()} | {question.strip()}")
    path = tmp_path / "FreebaseQA-dev.txt"
    path.write_text("\n".join(swapped) + "\n")
    with pytest.raises(DataLayoutError, match="swapped or shifted"):
        freebaseqa.parse_txt(path)
    path.write_text("\n".join(lines) + "\n")
    assert len(freebaseqa.parse_txt(path)) > 250


@pytest.mark.parametrize(
    "row",
    [
        "1,What is 2+2?,3,4,5,6,B",  # an index column shifts every field
        "B,What is 2+2?,3,4,5,6",  # answer first
        "question,A,B,C,D,answer",  # a header line
        "What is 2+2?,3,4,5,6,4",  # the answer as the option text, not its letter
    ],
)
def test_mmlu_answers_must_be_letters(tmp_path: Path, row: str) -> None:
    path = tmp_path / "virology_test.csv"
    path.write_text(row + "\n")
    with pytest.raises(DataLayoutError, match=r"answer\(A-D\)"):
        mmlu.parse_csv(path, "virology")


def _triviaqa(folder: Path, records: list[dict]) -> Path:
    (folder / "qa").mkdir(parents=True)
    (folder / "qa" / "web-dev.json").write_text(json.dumps({"Data": records}))
    return folder


def _record(i: int, question: str, value: str, aliases: list[str] | None) -> dict:
    answer = {"Value": value}
    if aliases is not None:
        answer |= {"Aliases": aliases, "NormalizedAliases": [a.lower() for a in aliases]}
    return {"QuestionId": f"t{i}", "Question": question, "Answer": answer}


def test_triviaqa_needs_aliases_and_unswapped_fields(tmp_path: Path) -> None:
    good = [_record(i, q, a, [a]) for i, (q, a) in enumerate(PAIRS)]
    assert len(release_rows(_triviaqa(tmp_path / "good", good))) == len(PAIRS)
    no_aliases = [_record(i, q, a, None) for i, (q, a) in enumerate(PAIRS)]
    with pytest.raises(DataLayoutError, match=r"has no Answer\.Aliases"):
        release_rows(_triviaqa(tmp_path / "bare", no_aliases))
    swapped = [_record(i, a, q, [q]) for i, (q, a) in enumerate(PAIRS)]
    with pytest.raises(DataLayoutError, match="Question and Answer look swapped") as error:
        release_rows(_triviaqa(tmp_path / "swapped", swapped))
    assert "triviaqa/qa/{web,wikipedia}-{train,dev}.json" in str(error.value)
