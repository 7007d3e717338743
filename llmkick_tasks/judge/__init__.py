"""LLM judge for llmkick tasks: client, cache, templates, parsers, protocols and task classes."""
