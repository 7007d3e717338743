"""TriviaQA tasks (LLM-KICK in-context retrieval augmented QA): closed and open book."""
