"""LLM unlearning experiments composed with Hydra: methods, benchmarks, evaluators."""

from unlearning import resolvers  # noqa: F401  (the configs' ${tofu_ou:...} resolver)

__version__ = "0.1.0"
