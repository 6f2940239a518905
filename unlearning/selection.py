"""Evaluation during unlearning and checkpoint selection (`trainer.eval_every`, `trainer.eval`, `trainer.select`).

Every `eval_every` optimiser steps and/or at each epoch's end (`eval_each_epoch`), and after the last, the run's
evaluator, with the `trainer.eval` options applied to a copy of it (e.g. `{max_items: 20, generate: false}`),
evaluates the model being trained; each metric goes to the logger as `eval/<metric>` at that step (train_log.jsonl,
W&B) and into `results.json`'s `curve`. With `select: METRIC:max|min` the weights of the best evaluation seen are
kept (the trainable parameters only: the LoRA adapters under LoRA) and put back when training ends, so the final
evaluation, the attacks and the saved model use them; `results.json`'s `selection` records the step, the value and
why. Under DDP every process calls this (the evaluation is split between them and every process gets the same
numbers, so the same choice)."""

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


def parse_stop(spec: str, where: str = "trainer") -> tuple[str, str, float | str]:
    """`METRIC:below:VALUE` or `METRIC:above:VALUE` -> (metric, '<' or '>', VALUE as a number, or 'reference': the
    retain reference's value of that metric)."""
    metric, _, rest = str(spec).partition(":")
    side, _, value = rest.partition(":")
    if metric and side in ("below", "above") and value:
        if value == "reference":
            return metric, "<" if side == "below" else ">", value
        try:
            return metric, "<" if side == "below" else ">", float(value)
        except ValueError:
            pass
    raise UserError(f"{where}.stop={spec!r} must be METRIC:below:VALUE or METRIC:above:VALUE, VALUE a number or "
                    "`reference` (the retain reference's value), e.g. trainer.stop=forget_Q_A_Prob:below:reference")


def subset(evaluator, options: dict):
    """A copy of the evaluator with the given options changed (each must be one of its settings)."""
    from unlearning.distributed import MainOnly

    if isinstance(evaluator, MainOnly):  # FSDP / ZeRO-3: the reduced evaluator still runs on rank 0 alone
        return MainOnly(subset(evaluator._inner, options))
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

    def __init__(self, evaluator, settings, tok, data, ctx, reference, logger=None, steps_per_epoch: int = 0,
                 replicated: bool = False):
        self.evaluator = subset(evaluator, settings.eval)
        self.every, self.select = settings.eval_every, parse_select(settings.select)
        self.per_epoch = steps_per_epoch if getattr(settings, "eval_each_epoch", False) else 0
        self.stop = parse_stop(settings.stop) if getattr(settings, "stop", None) else None
        self.stopped: dict | None = None
        self.tok, self.data, self.ctx, self.reference, self.logger = tok, data, ctx, reference, logger
        self.curve: list[dict] = []
        self.best_state: dict | None = None
        self.best_step: int | None = None
        # DDP: every process holds the same weights, so only rank 0 keeps the best copy and sends it at the end
        # (one CPU copy of the trainable weights instead of one per process)
        self.replicated = replicated

    def _keeps_copy(self) -> bool:
        from unlearning.distributed import is_main

        return not self.replicated or is_main()

    def __call__(self, step: int, total: int, model) -> bool | None:
        due = [n for n in (self.every, self.per_epoch) if n]  # every N steps and/or at each epoch's end
        if step != total and all(step % n for n in due):
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
                self.best_step = step
                if model is not None and self._keeps_copy():  # FSDP / ZeRO-3: the others get None
                    self.best_state = {k: p.detach().cpu().clone() for k, p in model.named_parameters() if p.requires_grad}
        return self.should_stop(step, numbers)

    def should_stop(self, step: int, numbers: dict) -> bool:
        """The stop rule (`trainer.stop`): True once the metric is past the threshold."""
        if self.stop is None:
            return False
        metric, op, threshold = self.stop
        if threshold == "reference":
            threshold = ((self.reference or {}).get("aggregates") or {}).get(metric)
            if threshold is None:
                raise UserError(f"trainer.stop={metric}{op}reference: the retain reference has no {metric}")
        value = numbers.get(metric)
        if value is None or not (value < threshold if op == "<" else value > threshold):
            return False
        self.stopped = {"step": step, "metric": metric, "value": value, "threshold": float(threshold),
                        "rule": f"{metric} {op} {self.stop[2]}"}
        log.info("stop rule: %s = %.6g %s %.6g at step %d", metric, value, op, threshold, step)
        return True

    def state_dict(self) -> dict:
        """The curve and the best weights so far: a checkpoint carries them, so a resumed run keeps both."""
        return {"curve": self.curve, "best_state": self.best_state, "best_step": self.best_step}

    def load_state_dict(self, state: dict) -> None:
        self.curve = list(state.get("curve") or [])
        self.best_state = state.get("best_state") if self._keeps_copy() else None
        if state.get("best_step") is not None:
            self.best_step = state["best_step"]

    def restore(self, model) -> None:
        """The selected weights back into the trained model (a no-op when the last evaluation was the best)."""
        if model is None or self.select is None or self.best_step is None:
            return
        params = dict(model.named_parameters())
        if self.best_state is not None:
            for name, value in self.best_state.items():
                params[name].data.copy_(value.to(params[name].device))
        if self.replicated:  # rank 0's copy to the others, parameter by parameter in one order
            import torch.distributed as dist

            for name in sorted(n for n, p in params.items() if p.requires_grad):
                dist.broadcast(params[name].data, src=0)
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
        if self.stopped is not None:
            out["stopped"] = self.stopped
        return out
