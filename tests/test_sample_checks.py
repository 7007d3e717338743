"""Every score of a point recomputed from its logged samples, for every kind of metric llmkick's tasks
produce; a score edited by one part in a million is caught, float round-trip noise is not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import edit_score, samples_file, write_point

from llmkick_models.workflow.sample_checks import (
    MISMATCH,
    MISSING,
    NOT_RECOMPUTABLE,
    PointCheck,
    numeric_scores,
)

KINDS: dict[str, tuple[dict[str, dict[str, list[Any]]], dict[str, Any]]] = {
    "exact match and contains (0/1 means)": (
        {"fqa": {"contains": [1, 0, 1, 1, 1], "exact_match": [1, 0, 0, 1, 0]}},
        {},
    ),
    "token F1 (a mean of fractions)": ({"tqa": {"f1": [0.5, 1 / 3, 0.0, 2 / 7, 0.1]}}, {}),
    "MMLU accuracy over subjects of different sizes, groups of groups": (
        {"s1": {"acc": [1, 0, 1]}, "s2": {"acc": [0] * 7 + [1]}, "s3": {"acc": [1, 1]}},
        {"groups": {"mmlu": ["stem", "other"], "stem": ["s1", "s2"], "other": ["s3"]}},
    ),
    "an unweighted group (lm-eval's weight_by_size: false)": (
        {"s1": {"acc": [1, 0, 1]}, "s2": {"acc": [0] * 7 + [1]}},
        {"groups": {"grp": ["s1", "s2"]}, "unweighted": ["grp"]},
    ),
    "judged scores with unparsed documents, and the judge's counters": (
        {
            "judged": {
                "coherence": [3.0, None, 5.0, 4.0],
                "coherence_short": [3.0, None, None, 4.0],
                "win_rate": [1.0, None, 0.5, 0.0],
                "judge_unparsed": [0.0, 2.0, 0.0, 1.0],
                "empty_answers": [0.0, 0.0, 1.0, 0.0],
            }
        },
        {"filter_key": "judge"},
    ),
    "perplexity corpus ratios and bits per byte": (
        {
            "wt": {
                "token_perplexity": [[-300.5, 64], [-280.25, 64], [-291.125, 64]],
                "word_perplexity": [[-300.5, 29], [-280.25, 30], [-291.125, 31]],
                "bits_per_byte": [[-300.5, 108], [-280.25, 109], [-291.125, 111]],
            }
        },
        {},
    ),
    "lm-eval's default aggregation, when the task config records none": (
        {
            "wta": {
                "word_perplexity": [[-30.5, 9], [-28.25, 10]],
                "byte_perplexity": [[-30.5, 40], [-28.25, 41]],
                "bits_per_byte": [[-30.5, 40], [-28.25, 41]],
            }
        },
        {"recorded": {"word_perplexity": None, "byte_perplexity": None, "bits_per_byte": None}},
    ),
}


def _check(folder: Path) -> PointCheck:
    return PointCheck(folder, json.loads((folder / "results.json").read_text()))


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_score_is_recomputed_from_its_samples(kind: str, tmp_path: Path) -> None:
    tasks, options = KINDS[kind]
    folder = write_point(tmp_path, "p", tasks, **options)
    assert _check(folder).findings == []
    results = json.loads((folder / "results.json").read_text())
    scores = [(task, key, value) for task, entry in results["results"].items()
              for key, value in numeric_scores(entry).items()]  # fmt: skip
    assert scores
    for task, key, value in scores:
        edit_score(folder, task, key, value * (1 + 1e-6) + 1e-6)
        findings = _check(folder).findings
        assert [(f.kind, f.task, f.metric) for f in findings] == [(MISMATCH, task, key)], (task, key)
        assert f"reports {task} {key} = " in findings[0].message
        edit_score(folder, task, key, value)


def test_float_noise_is_not_a_disagreement(tmp_path: Path) -> None:
    """Summing in another order (another process count, a group's weighted mean) moves the last bits."""
    f1 = [0.844, 0.758, 0.421, 0.259, 0.511, 0.405]
    folder = write_point(tmp_path, "p", {"t": {"f1": f1}})
    value = json.loads((folder / "results.json").read_text())["results"]["t"]["f1,none"]
    reordered = sum(reversed(f1)) / len(f1)
    assert reordered != value  # 0.533 vs 0.5329999999999999: an exact comparison would refuse it
    for noisy in (reordered, value * (1 + 1e-12)):
        edit_score(folder, "t", "f1,none", noisy)
        assert _check(folder).findings == []


def test_a_truncated_samples_file_disagrees_with_the_document_count(tmp_path: Path) -> None:
    folder = write_point(tmp_path, "p", {"t": {"acc": [1, 0, 1, 0]}})
    path = samples_file(folder, "t")
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:2]))  # the mean stays 0.5
    [finding] = _check(folder).findings
    assert (finding.kind, finding.task, finding.metric) == (MISMATCH, "t", None)
    assert finding.message == (
        f"results disagree with samples: {folder / 'results.json'} says t scored 4 documents (n-samples), "
        f"{path} holds 2"
    )


def test_a_group_without_one_subtask_samples_is_missing(tmp_path: Path) -> None:
    tasks = {"s1": {"acc": [1, 0]}, "s2": {"acc": [1]}}
    folder = write_point(tmp_path, "p", tasks, groups={"g": ["s1", "s2"]})
    samples_file(folder, "s2").unlink()
    findings = {(f.task, f.kind): f.message for f in _check(folder).findings}
    assert findings == {
        ("s2", MISSING): f"samples missing: {samples_file(folder, 's2')}",
        ("g", MISSING): f"samples missing: {samples_file(folder, 's2')}",
    }


def test_an_aggregation_function_other_than_llmkicks_counter_is_not_recomputed(tmp_path: Path) -> None:
    source = "def count(items):\n    return max(items)\n"  # same name, another function
    folder = write_point(tmp_path, "p", {"judged": {"judge_unparsed": [0.0, 1.0]}}, recorded={
        "judge_unparsed": source})  # fmt: skip
    [finding] = _check(folder).findings
    assert finding.kind == NOT_RECOMPUTABLE and "aggregated it with 'function count()'" in finding.message


def test_lm_evals_own_perplexity_files_pass(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """The real thing: lm-eval's results and samples files of both WikiText-2 tasks (token windows and
    articles: weighted_perplexity recorded and lm-eval's default, bits_per_byte) come back exactly."""
    import os
    import subprocess
    import sys

    data = tmp_path / "data" / "wikitext2"
    data.mkdir(parents=True)
    text = [" = A = ", " the cat sat on the mat . " * 60, " = B = ", " dogs bark at night . " * 60]
    (data / "test.txt").write_text("\n".join(text) + "\n")
    metadata = {"data_dir": str(data.parent), "wikitext2_seqlen": 64, "wikitext2_windows": 4}
    command = [
        str(Path(sys.executable).with_name("lm_eval")), "--model", "hf",
        "--model_args", f"pretrained={tiny_llama_dir}", "--device", "cpu",
        "--tasks", "llmkick_wikitext2_ppl,llmkick_wikitext2_ppl_articles", "--metadata", json.dumps(metadata),
        "--output_path", str(tmp_path / "out"), "--log_samples",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    [results_file] = (tmp_path / "out").rglob("results_*.json")
    results = json.loads(results_file.read_text())
    check = PointCheck(tmp_path / "out", results)
    assert check.findings == []
    for task in ("llmkick_wikitext2_ppl", "llmkick_wikitext2_ppl_articles"):
        assert check.samples.path(task).is_file() and results["n-samples"][task]["effective"] >= 2
    assert {"token_perplexity,none", "bits_per_byte,none"} <= set(results["results"]["llmkick_wikitext2_ppl"])


def test_documents_with_unicode_line_separators_are_read_whole(tmp_path: Path) -> None:
    """lm-eval writes samples with ``ensure_ascii=False``: U+2028 or a form feed inside a document is no
    line break of the JSONL file."""
    folder = write_point(tmp_path, "p", {"t": {"acc": [1, 0, 1]}})
    path = samples_file(folder, "t")
    samples = [json.loads(line) for line in path.read_text().split("\n") if line]
    for sample in samples:
        sample["doc"]["question"] = "first\u2028second\x0cthird\u0085"
    path.write_text("\n".join(json.dumps(s, ensure_ascii=False) for s in samples) + "\n")
    assert _check(folder).findings == []


def test_a_copy_rejudged_by_an_older_llmkick_judge_is_stated_not_recomputable(tmp_path: Path) -> None:
    """Before `llmkick judge` logged per-document values its copies named only the samples they came from:
    such a score cannot be checked (nor paired), and the finding says how to get one that can."""
    folder = write_point(tmp_path, "p", {"judged": {"score": [3.0, 5.0]}, "t": {"acc": [1, 0]}},
                         filter_key="judge")  # fmt: skip
    results = json.loads((folder / "results.json").read_text())
    results["configs"]["judged"]["metadata"] = {"rejudged_from": str(samples_file(folder, "judged"))}
    (folder / "results.json").write_text(json.dumps(results))
    [finding] = _check(folder).findings
    assert (finding.kind, finding.task, finding.metric) == (NOT_RECOMPUTABLE, "judged", None)
    assert finding.message == (
        "cannot be recomputed from samples: re-judged by an older `llmkick judge`, whose samples keep the "
        "judge's records, not per-document scores; re-judge with --overwrite"
    )
