"""FreebaseQA tasks (LLM-KICK factoid QA)."""
