"""Self-contained ``utils.py`` files for the upstream task folder, cut from the plugin's own sources.

A pull request to lm-eval cannot import llmkick, and a hand-kept second copy of the scoring would drift.
So each ``utils.py`` of the folder is generated: the named top-level statements (functions, classes,
constants, with the comment lines right above them) are copied from the plugin's modules in the order
listed, references to the ``scoring`` module are made plain names, and the imports they need are added.
``tests/test_upstream_tasks.py`` checks that the generated functions score and build documents exactly as
the plugin's do.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re

# utils file -> [(module, names)], in the order they are written.
BUNDLES: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "mmlu/utils.py": [
        (
            "llmkick_tasks.scoring",
            ("MMLU_LETTERS", "_MMLU_LETTER", "mmlu_predicted_letter", "mmlu_letter_match"),
        ),
        ("llmkick_tasks.mmlu.utils", ("process_generative",)),
    ],
    "triviaqa/utils.py": [
        (
            "llmkick_tasks.scoring",
            ("UNICODE_QUOTES", "_PUNCTUATION", "_ARTICLES", "first_line", "normalize_answer"),
        ),
        ("llmkick_tasks.scoring", ("_normalized_aliases", "exact_match", "token_f1", "lenient_match")),
        ("llmkick_tasks.triviaqa.utils", ("score", "process_results")),
        ("llmkick_tasks.data_dir", ("to_dataset",)),
        (
            "llmkick_tasks.triviaqa.documents",
            (
                "EVIDENCE_CHARACTERS",
                "FEATURES",
                "RawDoc",
                "_aliases",
                "_first",
                "hub_raw_doc",
                "open_book",
                "process_closed_book",
                "process_open_book",
            ),
        ),
    ],
    "wikitext2/utils.py": [
        ("llmkick_tasks.wikitext2.data", ("_TITLE", "_DETOKENIZE", "detokenize", "split_articles")),
        ("llmkick_models.workflow.upstream_glue", ("process_articles",)),
    ],
}
# Constants computed from other llmkick modules: written as their value.
BY_VALUE = frozenset({"EVIDENCE_CHARACTERS"})
# Module prefixes that become plain names once the functions sit in one file.
QUALIFIERS = re.compile(r"\bscoring\.")
# (usage pattern, import line): an import is written when the bundled code uses it.
IMPORTS = (
    (r"\bre\.", "import re"),
    (r"\bstring\.", "import string"),
    (r"\bCounter\(", "from collections import Counter"),
    (r"\bAny\b", "from typing import Any"),
    (r"\bdatasets\.", "import datasets"),
)
# Used in annotations only: imported for type checkers alone (lm-eval's lint asks for that).
TYPING_ONLY = (r"\b(Callable|Iterable|Mapping)\b", "from collections.abc import {}")
DOCSTRINGS = {
    "mmlu/utils.py": "MMLU (LLM-KICK's generative protocol): scoring of the one generated letter.",
    "triviaqa/utils.py": "TriviaQA rc (LLM-KICK's ICRA task): documents from the Hub rows, and scoring.",
    "wikitext2/utils.py": "WikiText-2 test perplexity per article: the test rows grouped into articles.",
}


def top_level_statement(module_name: str, name: str) -> str:
    """Source of the top-level statement of ``module_name`` that defines ``name``, with the comment lines
    directly above it; raises ``LookupError`` naming both when there is none."""
    module = importlib.import_module(module_name)
    source = inspect.getsource(module)
    lines = source.splitlines()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name:
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if not any(isinstance(t, ast.Name) and t.id == name for t in targets):
                continue
            start = node.lineno
        else:
            continue
        while start > 1 and lines[start - 2].lstrip().startswith("#"):
            start -= 1
        statement = "\n".join(lines[start - 1 : node.end_lineno])
        if name in BY_VALUE:
            comments = [line for line in statement.splitlines() if line.startswith("#")]
            statement = "\n".join([*comments, f"{name} = {getattr(module, name)!r}"])
        return statement
    raise LookupError(f"{module_name} defines no top-level {name!r} (upstream_bundle.BUNDLES is out of date)")


def _imports(body: str) -> list[str]:
    lines = []
    for pattern, line in IMPORTS:
        found = sorted(set(re.findall(pattern, body)))
        if found:
            lines.append(line.format(", ".join(found)) if "{}" in line else line)
    return lines


def bundle(relative: str) -> str:
    """The text of the generated ``utils.py`` at ``relative`` (a key of :data:`BUNDLES`)."""
    parts, modules = [], []
    for module_name, names in BUNDLES[relative]:
        modules.append(module_name)
        parts += [QUALIFIERS.sub("", top_level_statement(module_name, name)) for name in names]
    body = "\n\n\n".join(parts)
    stdlib = [line for line in _imports(body) if line != "import datasets"]
    typing_only = sorted(set(re.findall(TYPING_ONLY[0], body)))
    if typing_only:
        stdlib = [line for line in stdlib if not line.startswith("from typing ")]
        stdlib.append("from typing import TYPE_CHECKING" + (", Any" if re.search(r"\bAny\b", body) else ""))
    # isort's order: plain imports first, then from-imports, each alphabetical.
    stdlib.sort(key=lambda line: (line.startswith("from "), line))
    imports = "\n".join(["from __future__ import annotations", "", *stdlib])
    if "import datasets" in _imports(body):
        imports += "\n\nimport datasets"
    if typing_only:
        imports += f"\n\n\nif TYPE_CHECKING:\n    {TYPING_ONLY[1].format(', '.join(typing_only))}"
    sources = "".join(f"\n* ``{module}``" for module in dict.fromkeys(modules))
    docstring = (
        f'"""{DOCSTRINGS[relative]}\n\nGenerated by ``llmkick upstream-tasks`` (so that it imports nothing '
        f'of llmkick)\nfrom llmkick\'s modules:\n{sources}\n\nRegenerate it rather than editing it.\n"""'
    )
    return f"{docstring}\n\n{imports}\n\n\n{body}\n"
