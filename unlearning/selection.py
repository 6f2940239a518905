"""Evaluation during unlearning and checkpoint selection (`trainer.eval_every`, `trainer.eval`, `trainer.select`).

Every `eval_every` optimiser steps (and after the last) the run's evaluator, with the `trainer.eval` options
applied to a copy of it (e.g. `{max_items: 20, generate: false}`), evaluates the model being trained; each
metric goes to the logger as `eval/<metric>` at that step (train_log.jsonl, W&B) and into `results.json`'s
`curve`. With `select: METRIC:max|min` the weights of the best evaluation seen are kept (the trainable parameters
only: the LoRA adapters under LoRA) and put back when training ends, so the final evaluation, the attacks and the
saved model use them; `results.json`'s `selection` records the step, the value and why. Under DDP every process
calls this (the evaluation is split between them and every process gets the same numbers, so the same choice).
"""

from __future__ import annotations

import copy
import logging

from unlearning.errors import UserError

log = logging.getLogger(__name__)


def parse_select(spec: str | None) -> tuple[str, bool] | None:
    """`METRIC:max|min` -> (metric, higher is better)."""
    if not spec:
        return None
    metric, _, direction = str(spec).partition(":")
    return metric, direction == "max"


def subset(evaluator, options: dict):
    """A copy of the evaluator with the given options changed (each must be one of its settings)."""
    if hasattr(evaluator, "with_options"):  # the benchmark with lm-eval beside it (eval/combined.py)
        return evaluator.with_options(options)
    out = copy.copy(evaluator)
    for key, value in (options or {}).items():
        if value is None:  # null: the evaluator's own setting
            continue
        if key.startswith("_") or not hasattr(evaluator, key):
            raise UserError(f"trainer.eval.{key}: evaluator={evaluator.name} has no option {key!r}; give options of "
                            f"conf/evaluator/{evaluator.name}.yaml (e.g. max_items, generate)")
        setattr(out, key, list(value) if isinstance(value, (list, tuple)) else value)
    return out


def best_index(values: list[float | None], higher: bool) -> int | None:
    """Index of the best value (the first of equals); None values never win."""
    best = None
    for i, v in enumerate(values):
        if v is None:
            continue
        if best is None or (v > values[best] if higher else v < values[best]):
            best = i
    return best


class EvalDuringTraining:
    """The `on_step` callback of `train`: evaluates, logs, keeps the best weights."""

    def __init__(self, evaluator, settings, tok, data, ctx, reference, logger=None):
        self.evaluator = subset(evaluator, settings.eval)
        self.every, self.select = settings.eval_every, parse_select(settings.select)
        self.tok, self.data, self.ctx, self.reference, self.logger = tok, data, ctx, reference, logger
        self.curve: list[dict] = []
        self.best_state: dict | None = None

    def __call__(self, step: int, total: int, model) -> None:
        if step % self.every and step != total:
            return
        aggregates = self.evaluator.evaluate(model, self.tok, self.data, self.ctx, reference=self.reference)["aggregates"]
        numbers = {k: v for k, v in aggregates.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.curve.append({"step": step, **numbers})
        if self.logger is not None:
            self.logger.log({f"eval/{k}": v for k, v in numbers.items()}, step=step)
        if self.select is not None:
            metric, higher = self.select
            if metric not in numbers:
                raise UserError(f"trainer.select={metric}: the evaluation during training gave no {metric} "
                                f"(it gave {', '.join(sorted(numbers))}); pick one of those")
            if best_index([c.get(metric) for c in self.curve], higher) == len(self.curve) - 1:
                self.best_state = {k: p.detach().cpu().clone() for k, p in model.named_parameters() if p.requires_grad}
                self.best_step = step

    def restore(self, model) -> None:
        """The selected weights back into the trained model (a no-op when the last evaluation was the best)."""
        if self.best_state is None or model is None:
            return
        params = dict(model.named_parameters())
        for name, value in self.best_state.items():
            params[name].data.copy_(value.to(params[name].device))
        log.info("selection: the weights of step %d are kept", self.best_step)

    def record(self) -> dict:
        out = {"curve": self.curve}
        if self.select is not None and self.curve:
            metric, higher = self.select
            i = best_index([c.get(metric) for c in self.curve], higher)
            out["selection"] = {"metric": metric, "direction": "max" if higher else "min",
                                "step": self.curve[i]["step"], "value": self.curve[i][metric],
                                "why": f"the {'highest' if higher else 'lowest'} {metric} of {len(self.curve)} "
                                       f"evaluations during training (steps {', '.join(str(c['step']) for c in self.curve)})"}
        return out
