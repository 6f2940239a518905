"""The benchmark's evaluator with lm-eval beside it (`lm_eval=<preset>`): one evaluator to the rest of the run.

The benchmark evaluator stays in charge of everything that is its own (its name, objective, forget metrics, the
retain reference, the forget side that attacks measure, guidance); lm-eval's metrics are added to every
evaluation the run makes of a whole model: the baselines, the unlearned model, evaluation during training and the
weight attacks (quantization, relearning) that measure `all`.
"""

from __future__ import annotations

from unlearning.errors import UserError


class WithLmEval:
    def __init__(self, benchmark, extra):
        self.__dict__.update(benchmark=benchmark, extra=extra)

    def __getattr__(self, name):
        if name.startswith("__") or "benchmark" not in self.__dict__:  # copy/pickle probe an empty instance
            raise AttributeError(name)
        return getattr(self.benchmark, name)

    def evaluate(self, model, tok, data, ctx, reference=None) -> dict:
        result = self.benchmark.evaluate(model, tok, data, ctx, reference=reference)
        more = self.extra.evaluate(model, tok, data, ctx, reference=reference)
        result["aggregates"].update(more["aggregates"])
        result.setdefault("per_item", {}).update(more["per_item"])
        return result

    def metric_names(self, data=None) -> set[str]:
        return set(self.benchmark.metric_names(data)) | self.extra.metric_names(data)

    def guided(self):
        """What an extra guidance scale (generation.eval_scales) re-evaluates: lm-eval's numbers would not change."""
        return self.benchmark

    def forget_side(self):
        """Attacks that measure the forget side only measure the benchmark's (lm-eval is utility)."""
        return self.benchmark.forget_side()

    def with_options(self, options: dict):
        """A copy with `trainer.eval` options applied: each goes to the part that has it (`lm_eval: false` drops
        lm-eval from the evaluations during training)."""
        options = dict(options or {})
        keep_extra = options.pop("lm_eval", True)
        from unlearning.selection import subset

        bench_keys = {k: v for k, v in options.items() if hasattr(self.benchmark, k)}
        extra_keys = {k: v for k, v in options.items() if k not in bench_keys and hasattr(self.extra, k)}
        unknown = set(options) - set(bench_keys) - set(extra_keys)
        if unknown:
            key = sorted(unknown)[0]
            raise UserError(f"trainer.eval.{key}: neither evaluator={self.benchmark.name} nor lm_eval has an option "
                            f"{key!r} (e.g. max_items, generate; lm_eval: false leaves lm-eval out)")
        bench = subset(self.benchmark, bench_keys)
        if keep_extra is False:
            return bench
        return WithLmEval(bench, subset(self.extra, extra_keys))
