"""Evaluation: the paper's benchmarks and protocol, a sandbox for generated code, and an lm-eval bridge."""
