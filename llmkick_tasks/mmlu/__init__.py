"""MMLU tasks (LLM-KICK multiple-choice reasoning): the paper's generative protocol and loglikelihood."""
