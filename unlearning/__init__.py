"""LLM unlearning experiments composed with Hydra: methods, benchmarks, evaluators."""

__version__ = "0.1.0"
