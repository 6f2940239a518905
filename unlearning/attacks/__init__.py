"""Robustness attacks: perturb a copy of the unlearned model, then run the same evaluator again.

Config group `attack` (`attack=[relearn,quant8,quant4,paraphrase,icl]`, one YAML per attack in
`conf/attack/`); each
selected attack lands in `cfg.attacks.<name>` and its metrics are stored beside the plain ones as
`<metric>@<name>`, plus `<metric>@<name>_recovery` for the evaluator's forget metrics:
recovery = (after attack - unlearned) / (target - unlearned), 0 = the attack brings nothing back,
1 = back to the target (None where target and unlearned are equal). An attack never touches the
saved or evaluated unlearned model: it works on a deep copy (LoRA adapters merged into it).
Three shapes: a weight perturbation (`apply`: quantize), training on held-out forget examples then
evaluating on the rest (`split` + `apply`: relearn, whose unlearned and target baselines are measured
on that rest), and a change of the probes only (`data_only` + `transform`: paraphrase, icl).
"""

from __future__ import annotations

import copy
import logging
import math

from unlearning.results import write_json

log = logging.getLogger(__name__)


def recovery(after: float | None, unlearned: float | None, target: float | None) -> float | None:
    """(after - unlearned) / (target - unlearned): the share of what unlearning removed that the attack restores."""
    if after is None or unlearned is None or target is None:
        return None
    gap = target - unlearned
    if not math.isfinite(gap) or abs(gap) < 1e-12:
        return None
    return (after - unlearned) / gap


def fresh_copy(model):
    """A deep copy with any LoRA adapters merged, so an attack sees plain weights and leaves the original alone."""
    clone = copy.deepcopy(model)
    if hasattr(clone, "merge_and_unload"):
        clone = clone.merge_and_unload()
    return clone


def run_attacks(attacks: dict, evaluator, model, tok, data, ctx, reference: dict | None, metrics: dict,
                target: dict | None, load_target=None) -> dict:
    """Suffixed metrics of every attack (and recoveries of the evaluator's forget metrics)."""
    out = {}
    for name, attack in attacks.items():
        log.info("attack %s: %s", name, attack)
        if hasattr(attack, "split"):  # trains on part of the forget set: everything is measured on the rest
            held, eval_data = attack.split(evaluator, data)
            perturbed = attack.apply(fresh_copy(model), tok, held, ctx)
            unlearned = evaluator.evaluate(model, tok, eval_data, ctx, reference=reference)["aggregates"]
            target_model, _ = load_target()
            target_rest = evaluator.evaluate(target_model.to(model.device), tok, eval_data, ctx,
                                             reference=reference)["aggregates"]
            del target_model
        elif getattr(attack, "data_only", False):  # paraphrase / icl: the same model, asked differently
            eval_data, unlearned, target_rest = attack.transform(evaluator, data), metrics, target or {}
            perturbed = model
        else:
            eval_data, unlearned, target_rest = data, metrics, target or {}
            perturbed = attack.apply(fresh_copy(model), tok, data, ctx)
        result = evaluator.evaluate(perturbed, tok, eval_data, ctx, reference=reference)
        del perturbed
        if getattr(ctx, "out_dir", None) is not None:
            write_json(ctx.out_dir / "eval" / f"{evaluator.name}@{name}.json", result)
        for key, value in result["aggregates"].items():
            out[f"{key}@{name}"] = value
        for key in getattr(evaluator, "forget_metrics", ()):
            out[f"{key}@{name}_recovery"] = recovery(result["aggregates"].get(key), unlearned.get(key),
                                                     target_rest.get(key))
    return out
