"""The judged tasks' ``--metadata`` knobs, declared once: the judge's settings, the judged data, the prompts.

:meth:`llmkick_tasks.judge.config.JudgeSettings.from_metadata` reads every knob of :data:`JUDGE_KNOBS`
(``field`` names the setting each one fills) and checks those of :data:`JUDGED_DATA_KNOBS`, which the
loaders read; :data:`JUDGED_PROMPT_KNOBS` (how the judged prompts are formatted, :mod:`.chat`) are checked
with the run-wide task knobs.  The README's judge table is generated from all three (``llmkick task-knobs``).
Precedence: ``--metadata`` > the environment variables of ``env`` > the default.  The API key is not a knob:
it is read only from the environment, when a client is built (see :mod:`llmkick_tasks.judge.config`).
"""

from __future__ import annotations

from llmkick_tasks.knobs import PATH, TEXT, Knob, boolean, choice, integer, number

ENV_MODEL = "LLMKICK_JUDGE_MODEL"
ENV_BASE_URL = "LLMKICK_JUDGE_BASE_URL"
ENV_OPENAI_BASE_URL = "OPENAI_BASE_URL"
ENV_CACHE = "LLMKICK_JUDGE_CACHE"
ENV_TEMPLATES = "LLMKICK_JUDGE_TEMPLATES"
ENV_REFERENCE_MODEL = "LLMKICK_REFERENCE_MODEL"
ENV_REPLY_FORMAT = "LLMKICK_JUDGE_REPLY_FORMAT"

# GPT-4-class judge when talking to OpenAI itself; an OpenAI-compatible server must name its model.
DEFAULT_OPENAI_JUDGE = "gpt-4o"
# LLM-KICK's pairwise "Assistant 1" answers came from gpt-3.5-turbo.
DEFAULT_OPENAI_REFERENCE = "gpt-3.5-turbo"
# Judging protocols: llmkick's own templates, LLM-KICK's release files, FastChat's MT-Bench judge prompts.
PROTOCOLS = ("llmkick", "paper", "fastchat")
# What the judge may reply: anything (`free`), or only the score layout its prompt asks for (`regex`, sent as
# vLLM's structured outputs).
REPLY_FREE, REPLY_REGEX = "free", "regex"
REPLY_FORMATS = (REPLY_FREE, REPLY_REGEX)

BASE_URL = Knob(
    "judge_base_url",
    TEXT,
    None,
    "OpenAI-compatible server of the judge (vLLM, llama.cpp, ...), `http(s)://host...`",
    env=(ENV_BASE_URL, ENV_OPENAI_BASE_URL),
    shown_default="`https://api.openai.com/v1`",
    field="base_url",
)
MODEL = Knob(
    "judge_model",
    TEXT,
    None,
    "the judge model",
    env=(ENV_MODEL,),
    shown_default=f"`{DEFAULT_OPENAI_JUDGE}` on OpenAI; required with a base URL",
    field="model",
)
TEMPERATURE = Knob(
    "judge_temperature",
    number(0.0, 2.0),
    0.2,
    "judge sampling temperature (unset: the `paper` protocol uses its reviewer file's, `fastchat` 0)",
    field="temperature",
)
MAX_TOKENS = Knob(
    "judge_max_tokens",
    integer(1),
    1024,
    "longest judge reply in tokens (unset: the `paper` protocol uses its reviewer file's, `fastchat` 2048)",
    field="max_tokens",
)
MAX_CONCURRENCY = Knob(
    "judge_max_concurrency", integer(1), 16, "judge requests in flight", field="max_concurrency"
)
TIMEOUT = Knob("judge_timeout", number(0.001), 120.0, "seconds to wait for one reply", field="timeout")
RETRIES = Knob(
    "judge_retries",
    integer(0),
    6,
    "retries of a failed request (the `openai` client's, with backoff)",
    field="retries",
)
CACHE = Knob(
    "judge_cache",
    PATH,
    None,
    "the judge's response cache: a new file or a sqlite file",
    env=(ENV_CACHE,),
    shown_default="`$XDG_CACHE_HOME/llmkick/judge_cache.sqlite` (`~/.cache/...`)",
    field="cache_path",
)
TEMPLATES = Knob(
    "judge_templates",
    PATH,
    None,
    "folder of judge templates that replace the built-in ones by name",
    env=(ENV_TEMPLATES,),
    shown_default="built-in (`llmkick_tasks/judge/templates/`)",
    field="templates_dir",
)
SWAP = Knob(
    "judge_swap",
    boolean(),
    False,
    "position-bias control: judge both answer orders and average",
    field="swap",
)
PROTOCOL = Knob(
    "judge_protocol",
    choice(PROTOCOLS),
    "llmkick",
    "how the judge is asked (see [Protocols](#protocols-llmkick-paper-fastchat))",
    field="protocol",
)
REPLY_FORMAT = Knob(
    "judge_reply_format",
    choice(REPLY_FORMATS),
    REPLY_FREE,
    "`regex`: the judge may only reply with the scores its prompt asks for (vLLM >= 0.10 servers; see "
    "[Constrained replies](#constrained-replies-judge_reply_formatregex))",
    env=(ENV_REPLY_FORMAT,),
    field="reply_format",
)
REFERENCE_MODEL = Knob(
    "reference_model",
    TEXT,
    None,
    "the model that writes the missing pairwise reference answers",
    env=(ENV_REFERENCE_MODEL,),
    shown_default=f"`{DEFAULT_OPENAI_REFERENCE}` on OpenAI, else the judge model",
    field="reference_model",
)
REFERENCE_TEMPERATURE = Knob(
    "reference_temperature",
    number(0.0, 2.0),
    0.0,
    "sampling temperature of the reference model",
    field="reference_temperature",
)
REFERENCE_MAX_TOKENS = Knob(
    "reference_max_tokens",
    integer(1),
    1024,
    "longest reference answer in tokens",
    field="reference_max_tokens",
)

#: The judge's settings, each filling the :class:`~llmkick_tasks.judge.config.JudgeSettings` field it names.
JUDGE_KNOBS = (
    BASE_URL,
    MODEL,
    TEMPERATURE,
    MAX_TOKENS,
    MAX_CONCURRENCY,
    TIMEOUT,
    RETRIES,
    CACHE,
    TEMPLATES,
    SWAP,
    PROTOCOL,
    REPLY_FORMAT,
    REFERENCE_MODEL,
    REFERENCE_TEMPERATURE,
    REFERENCE_MAX_TOKENS,
)

SUMMARIZATION_BINS = Knob(
    "summarization_bins",
    choice(("release", "length")),
    None,
    "summarization stories binned by the data's release folders or by article length",
    shown_default="`release` under the paper protocol with a data dir, else `length`",
)
STORIES_PER_BIN = Knob(
    "stories_per_bin",
    integer(1),
    100,  # the paper's choice (the released code used 30)
    "summarization stories per length bin",
)
REFERENCE_FILE = Knob(
    "reference_file",
    PATH,
    None,
    'JSONL of reference answers (`{"id": ..., "text": ...}`) for the pairwise tasks; the rest are generated',
)
#: Knobs of the judged tasks' data, read by their loaders and checked with the judge before any load.
JUDGED_DATA_KNOBS = (SUMMARIZATION_BINS, STORIES_PER_BIN, REFERENCE_FILE)

#: Values of ``chat_template``: the knob value that names a conversation format is its ``key``
#: (:mod:`llmkick_tasks.judge.conversation`).
CHAT_AUTO, CHAT_VICUNA, CHAT_PLAIN = "auto", "vicuna_v1.1", "plain"
CHAT_TEMPLATE = Knob(
    "chat_template",
    choice((CHAT_AUTO, CHAT_VICUNA, CHAT_PLAIN)),
    CHAT_AUTO,
    "judged prompts: `auto` the tokenizer's chat template, else the plain transcript (warned); "
    "`vicuna_v1.1` FastChat's Vicuna conversation, as LLM-KICK generated; `plain` the transcript "
    "(see [Chat prompts](#chat-prompts))",
)
#: Knobs of the judged tasks' prompts, checked with the run-wide knobs before the model loads.
JUDGED_PROMPT_KNOBS = (CHAT_TEMPLATE,)
