"""LLM-KICK instruction following: Vicuna-80, judged pairwise."""
