"""Robustness attacks: perturb a copy of the unlearned model, then run the same evaluator again.

Config group `attack` (`attack=[relearn,quant8,quant4,paraphrase,icl]`, one YAML per attack in
`conf/attack/`); each
selected attack lands in `cfg.attacks.<name>` and its metrics are stored beside the plain ones as
`<metric>@<name>`, plus, for the evaluator's forget metrics, `<metric>@<name>_recovery`:
recovery = (after attack - unlearned) / (target - unlearned), 0 = the attack brings nothing back,
1 = back to the target (None where |target - unlearned| is under `robustness.recovery_floor`, the reason in
results.json `robustness.null_reasons`), and `<metric>@<name>_vs_reference` = the attacked unlearned model minus
the same attack on the retain reference (the model that never saw the forget set; `robustness.control`): the
knowledge the attack exposes beyond what it would give anyone; 0 = as good as never trained. `<metric>@worst` is the
attacked value that shows the most knowledge over the run's attacks (results.json names the attack). An attack never
touches the
saved or evaluated unlearned model: it works on a deep copy (LoRA adapters merged into it).
Three shapes: a weight perturbation (`apply`: quantize), training on held-out forget examples then
evaluating on the rest (`split` + `apply`: relearn, whose unlearned and target baselines are measured
on that rest), and a change of the probes only (`data_only` + `transform`: paraphrase, icl, the adversarial prompt
families of jailbreak.py; `multiple_choice` scores its own options with `score` and names its own `forget_metrics`).
What is measured again (`measure`): a weight attack re-runs the whole evaluator (`all`, the default) or only
its forget side (`forget`: TOFU's forget split, the PII probes without utility); a data-only attack always
measures the forget side, as everything else is asked exactly as in the plain evaluation, of the same model,
and would repeat the plain numbers; relearn's remainder baselines only feed the recoveries, so they are
measured on the forget side too. On the whole TOFU evaluation (657 questions, 200 new tokens) the forget side
is 40 questions.
"""

from __future__ import annotations

import copy
import logging
import math

from unlearning.errors import UserError
from unlearning.results import write_json

MEASURES = ("all", "forget")

log = logging.getLogger(__name__)


def recovery(after: float | None, unlearned: float | None, target: float | None) -> float | None:
    """(after - unlearned) / (target - unlearned): the share of what unlearning removed that the attack restores."""
    if after is None or unlearned is None or target is None:
        return None
    gap = target - unlearned
    if not math.isfinite(gap) or abs(gap) < 1e-12:
        return None
    return (after - unlearned) / gap


def check_measure(name: str, measure, evaluator) -> None:
    """`attacks.<name>.measure` (validation phase): all or forget, and forget only with an evaluator that has a
    forget side."""
    if measure not in MEASURES:
        raise UserError(f"attacks.{name}.measure={measure!r} must be one of {list(MEASURES)} (all: the whole "
                        "evaluator again; forget: only its forget metrics)")
    if measure == "forget" and not hasattr(evaluator, "forget_side"):
        raise UserError(f"attacks.{name}.measure=forget: evaluator={evaluator.name} has no separate forget side; "
                        "use measure=all")


def scope(evaluator, attack):
    """The evaluator an attack's own evaluation runs (module docstring: `measure`)."""
    if getattr(attack, "measure", "all") == "forget" and hasattr(evaluator, "forget_side"):
        return evaluator.forget_side()
    return evaluator


def without_autocast(ctx):
    """The run context with bf16 autocast off: optimum-quanto's int8/int4 CPU matmuls take fp32 activations only
    ("expected scalar type BFloat16 but found Float" under autocast), so a quantized copy is evaluated in fp32."""
    gen = getattr(ctx, "generation", None)
    if not gen or not gen.get("bf16"):
        return ctx
    from omegaconf import DictConfig, OmegaConf

    clone = copy.copy(ctx)
    clone.generation = OmegaConf.merge(gen, {"bf16": False}) if isinstance(gen, DictConfig) else {**gen, "bf16": False}
    return clone


def fresh_copy(model):
    """A deep copy with any LoRA adapters merged, so an attack sees plain weights and leaves the original alone."""
    clone = copy.deepcopy(model)
    if hasattr(clone, "merge_and_unload"):
        clone = clone.merge_and_unload()
    return clone


def baselines_on(evaluator, model, tok, data, ctx, reference, load_target) -> tuple[dict, dict]:
    """The unlearned and the target model's aggregates on these probes (recoveries compare like with like)."""
    unlearned = evaluator.evaluate(model, tok, data, ctx, reference=reference)["aggregates"]
    if load_target is None:  # unlearning-eval without stage.target_path: no target, no recoveries
        return unlearned, {}
    target_model, _ = load_target()
    target = evaluator.evaluate(target_model.to(model.device), tok, data, ctx, reference=reference)["aggregates"]
    del target_model
    return unlearned, target


def recovery_null_reason(after, unlearned, target, floor: float) -> str | None:
    """Why `recovery` is null for these terms (None: it is not): a missing term, or a gap under the floor."""
    if after is None or unlearned is None:
        return "the metric was not computed (e.g. ROUGE with evaluator.generate=false)"
    if target is None:
        return "no target to compare with (unlearning-eval without stage.target_path)"
    gap = target - unlearned
    if not math.isfinite(gap) or abs(gap) < max(floor, 1e-12):
        return (f"|target - unlearned| = {abs(gap):.3g} is below robustness.recovery_floor={floor:g}: unlearning "
                "changed this metric too little for a share of it to mean anything; read the _vs_reference value")
    return None


def knowledge_sign(evaluator, key: str) -> int:
    """+1 where a higher value means the model knows more of the forget set, -1 where it means less."""
    return -1 if key in getattr(evaluator, "higher_means_forgotten", ()) else 1


def worst_case(evaluator, out: dict, names: list[str]) -> dict:
    """Per forget metric: the attack whose attacked value shows the most knowledge (direction-aware)."""
    worst = {}
    for key in getattr(evaluator, "forget_metrics", ()):
        seen = [(name, out[f"{key}@{name}"]) for name in names
                if isinstance(out.get(f"{key}@{name}"), (int, float)) and math.isfinite(out[f"{key}@{name}"])]
        if seen:
            name, value = max(seen, key=lambda nv: knowledge_sign(evaluator, key) * nv[1])
            worst[key] = {"value": value, "attack": name, "vs_reference": out.get(f"{key}@{name}_vs_reference")}
    return worst


def evaluate_attacked(attack, evaluator, model, tok, data, ctx, reference):
    """The evaluator's own evaluation of the attacked model, or the attack's own scoring where it has one (a
    multiple-choice probe is scored by likelihood of its options: attacks/jailbreak.py)."""
    if hasattr(attack, "score"):
        return attack.score(evaluator, model, tok, data, ctx)
    return scope(evaluator, attack).evaluate(model, tok, data, ctx, reference=reference)


class _Reference:
    """The never-trained model (retain reference), loaded on first use and kept for every attack of the run."""

    def __init__(self, load, device):
        self._load, self._device, self.model = load, device, None

    def get(self):
        if self.model is None:
            self.model = self._load()[0].to(self._device)
        return self.model


def run_attacks(attacks: dict, evaluator, model, tok, data, ctx, reference: dict | None, metrics: dict,
                target: dict | None, load_target=None, load_reference=None, floor: float = 0.0,
                no_reference: str | None = None) -> tuple[dict, dict]:
    """Suffixed metrics of every attack, and what the run records beside them (results.json `robustness`).

    Per attack and forget metric: `<m>@<a>` (attacked unlearned), `<m>@<a>_recovery` (null under the floor, the
    reason in `robustness.null_reasons`) and `<m>@<a>_vs_reference` = attacked unlearned - attacked never-trained
    model (`load_reference`; null with `no_reference` as the reason where there is none); `<m>@worst` over them."""
    out, notes = {}, {"recovery_floor": floor, "attacked_reference": {}, "null_reasons": {}}
    forget_side = evaluator.forget_side() if hasattr(evaluator, "forget_side") else evaluator
    ref = _Reference(load_reference, model.device) if load_reference is not None else None
    for name, attack in attacks.items():
        log.info("attack %s: %s", name, attack)
        held = None
        if callable(getattr(attack, "split", None)):  # trains on part of the forget set: everything is measured on the rest
            held, eval_data = attack.split(evaluator, data)
            perturbed = attack.apply(fresh_copy(model), tok, held, ctx)
            # the remainder baselines only feed the recoveries of the forget metrics
            unlearned, target_rest = baselines_on(forget_side, model, tok, eval_data, ctx, reference, load_target)
        elif getattr(attack, "data_only", False):  # paraphrase / icl: the same model, asked differently
            eval_data, perturbed = attack.transform(evaluator, data), model
            # like for like: the baselines are the same items asked plainly (PII paraphrase: a subset of the probes)
            plain = attack.plain(evaluator, data) if hasattr(attack, "plain") else data
            unlearned, target_rest = metrics, target or {}
            if plain is not data:
                unlearned, target_rest = baselines_on(forget_side, model, tok, plain, ctx, reference, load_target)
        else:
            eval_data, unlearned, target_rest = data, metrics, target or {}
            perturbed = attack.apply(fresh_copy(model), tok, data, ctx)
        attack_ctx = ctx if getattr(attack, "autocast", True) else without_autocast(ctx)
        if attack_ctx is not ctx:  # one precision for every term: the baselines again without bf16 autocast
            unlearned, target_rest = baselines_on(scope(evaluator, attack), model, tok, eval_data, attack_ctx,
                                                  reference, load_target)
        result = evaluate_attacked(attack, evaluator, perturbed, tok, eval_data, attack_ctx, reference)
        del perturbed
        result["recovery_baselines"] = {"unlearned": unlearned, "target": target_rest}  # what recoveries divide by
        control = None
        if ref is not None:  # the same attack, items, probes and precision on the model that never saw the forget set
            if held is not None:
                attacked_ref = attack.apply(fresh_copy(ref.get()), tok, held, ctx)
            elif getattr(attack, "data_only", False):
                attacked_ref = ref.get()
            else:
                attacked_ref = attack.apply(fresh_copy(ref.get()), tok, data, ctx)
            control = evaluate_attacked(attack, evaluator, attacked_ref, tok, eval_data, attack_ctx, reference)
            del attacked_ref
            notes["attacked_reference"][name] = control["aggregates"]
        if getattr(ctx, "out_dir", None) is not None:
            write_json(ctx.out_dir / "eval" / f"{evaluator.name}@{name}.json", result)
            if control is not None:
                write_json(ctx.out_dir / "eval" / f"{evaluator.name}@{name}_reference.json", control)
        for key, value in result["aggregates"].items():
            out[f"{key}@{name}"] = value
        for key in getattr(attack, "forget_metrics", None) or getattr(evaluator, "forget_metrics", ()):
            after = result["aggregates"].get(key)
            args = (after, unlearned.get(key), target_rest.get(key))
            why = getattr(attack, "no_recovery", None) or recovery_null_reason(*args, floor)
            out[f"{key}@{name}_recovery"] = None if why else recovery(*args)
            if why:
                notes["null_reasons"][f"{key}@{name}_recovery"] = why
            theirs = (control or {}).get("aggregates", {}).get(key)
            if isinstance(after, (int, float)) and isinstance(theirs, (int, float)):
                out[f"{key}@{name}_vs_reference"] = after - theirs
            else:
                out[f"{key}@{name}_vs_reference"] = None
                notes["null_reasons"][f"{key}@{name}_vs_reference"] = (
                    (no_reference or "no never-trained model to attack") if control is None
                    else "the metric was not computed on the attacked reference")
    ref = None  # the reference copy goes before the results are written
    notes["worst_case"] = worst_case(evaluator, out, list(attacks))
    for key, w in notes["worst_case"].items():
        out[f"{key}@worst"], out[f"{key}@worst_vs_reference"] = w["value"], w["vs_reference"]
    return out, notes
