"""`edge-distill llm`: a causal language model distilled into an on-device generator (lm/build.py)."""
