"""LLM-KICK in-context summarization (CNN/DailyMail, judged)."""
