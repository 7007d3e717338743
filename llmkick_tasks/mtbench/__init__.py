"""MT-Bench: two-turn instruction following, single-answer grading."""
