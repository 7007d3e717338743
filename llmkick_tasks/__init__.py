"""llmkick_tasks: the LLM-KICK tasks as lm-eval task YAMLs (one folder per benchmark) and their helpers.

The directory is added to every lm-eval ``TaskManager`` by the plugin hook (``llmkick_models._boot``).
"""
