"""RMU, representation misdirection (Li et al. 2024, WMDP), on the shared loop.

Forget: the chosen layer's hidden states on forget answer tokens are pushed to a fixed
random unit vector times `steering_coeff`; retain: kept at the frozen model's hidden
states on retain answer tokens. Only the update layers train. Both passes stop at the
chosen layer (a forward hook raises once it has the output), so the layers above it
and the LM head never run. The frozen model is the same model with LoRA adapters
disabled, or a copy truncated to the chosen layer.
WMDP's own loss (rmu/unlearn.py) is `mse_loss(h, target)`, the mean over every element of the batch, padding and
BOS included; `normalise` here averages over answer (labelled) tokens only (`tokens`) or per sequence
(`sequences`, OpenUnlearning), on purpose: an elementwise mean over padding changes with the padded width, i.e. with
the batch composition and the process layout.
Written by hand: the early-exit hook and the masked MSE (nothing in torch/transformers/peft
exposes one layer's output without running the whole model).
"""

from __future__ import annotations

import torch
from torch import nn

from unlearning.data.base import IGNORE
from unlearning.errors import UserError
from unlearning.methods.base import Method, count, reject_unknown, require_positive, rows_mean
from unlearning.methods.reference import Reference, is_peft

PAPER_LAYER, PAPER_DEPTH = 7, 32  # WMDP's RMU on Zephyr-7B: layer 7 of 32, update layers 5-7


def decoder_layers(model) -> nn.ModuleList:
    base = model.get_base_model() if is_peft(model) else model
    depth = base.config.num_hidden_layers
    for _, module in base.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == depth:
            return module
    raise UserError(f"method=rmu: cannot find the {depth} decoder layers of {type(base).__name__}")


class _Stop(Exception):
    pass


def _several_processes() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


def layer_output(model, layer: nn.Module, batch: dict, prefix: str = "") -> torch.Tensor:
    """Hidden states after `layer`, without running the rest of the model; with several processes, with it (DDP
    syncs gradients, and FSDP reshards, only after a forward that returns; the layers after it are frozen)."""
    seen = {}
    if _several_processes():
        def keep(_module, _args, output):
            seen["h"] = output[0] if isinstance(output, tuple) else output

        handle = layer.register_forward_hook(keep)
        try:
            model(input_ids=batch[prefix + "input_ids"], attention_mask=batch[prefix + "attention_mask"],
                  use_cache=False)
        finally:
            handle.remove()
        return seen["h"]

    def hook(_module, _args, output):
        seen["h"] = output[0] if isinstance(output, tuple) else output
        raise _Stop

    handle = layer.register_forward_hook(hook)
    try:
        model(input_ids=batch[prefix + "input_ids"], attention_mask=batch[prefix + "attention_mask"], use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    return seen["h"]


NORMALISE = ("tokens", "sequences", "openunlearning")
WMDP_PARAMS = r"mlp\.down_proj\."  # WMDP's rmu/unlearn.py: param_ids=[6], the MLP down-projections (their LoRA adapters)


def masked_mse(h: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, normalise: str = "tokens",
               batch: dict | None = None) -> torch.Tensor:
    """The squared error averaged over the hidden dimension, then over the masked tokens of the batch (`tokens`), or
    over each sequence's masked tokens and then over sequences (`sequences`: OpenUnlearning's
    compute_activation_loss, src/trainer/unlearn/rmu.py)."""
    mask = mask.float()
    per_token = (h.float() - target.float()).square().mean(-1) * mask
    if normalise == "openunlearning":
        # OU's compute_activation_loss divides the per-sequence sums [B] by the lengths kept as [B, 1]: broadcast to
        # B x B and averaged, mean(sums) * mean(1 / lengths) (matches OU's records to the last digit)
        inverse = (1 / mask.sum(1).clamp(min=1)).sum()
        return rows_mean(per_token.sum(1), batch or {}) * count(batch or {}, "inverse_lengths", inverse) / count(
            batch or {}, "rows", mask.shape[0])
    if normalise == "sequences":
        return rows_mean(per_token.sum(1) / mask.sum(1).clamp(min=1), batch or {})
    return per_token.sum() / max(count(batch or {}, "labelled", int(mask.sum())), 1)


class RMU(Method):
    name = "rmu"

    def __init__(self, layer: int | None = None, update_layers: list[int] | str | None = None, steering_coeff: float = 6.5,
                 retain_weight: float = 1200.0, params: str | None = WMDP_PARAMS, seed: int = 0,
                 normalise: str = "tokens", **unknown):
        reject_unknown(self.name, unknown, ["layer", "update_layers", "steering_coeff", "retain_weight", "params", "seed",
                                            "normalise"])
        require_positive(self.name, "steering_coeff", steering_coeff)
        if retain_weight < 0:
            raise UserError(f"method.retain_weight={retain_weight} must be >= 0 (conf/method/rmu.yaml)")
        if normalise not in NORMALISE:
            raise UserError(f"method.normalise={normalise!r} must be one of {list(NORMALISE)} (tokens: over the batch's "
                            "answer tokens; sequences: per sequence first; openunlearning: OU's code, "
                            "mean of the sums x mean of 1 / lengths)")
        if isinstance(update_layers, str) and update_layers != "all":
            raise UserError(f"method.update_layers={update_layers!r}: give a list of layer indices, null, or all")
        self.normalise = normalise
        self.layer = layer
        self.update_layers = update_layers if update_layers in (None, "all") else list(update_layers)
        self.steering_coeff, self.retain_weight, self.params, self.seed = float(steering_coeff), float(retain_weight), params, seed
        self.needs_retain = self.retain_weight > 0
        self.control = None
        self.reference = None

    def resolve_layers(self, model) -> tuple[int, list[int] | str]:
        return self.layers_for(len(decoder_layers(model)))

    def check_depth(self, depth: int) -> None:
        """The validation phase: the layers exist in this model (its config's num_hidden_layers)."""
        self.layers_for(depth)

    def layers_for(self, depth: int) -> tuple[int, list[int] | str]:
        # The paper's layer 7 of 32, scaled to this model's depth.
        layer = self.layer if self.layer is not None else round(PAPER_LAYER / PAPER_DEPTH * depth)
        update = self.update_layers if self.update_layers is not None else [i for i in (layer - 2, layer - 1, layer) if i >= 0]
        if not 0 <= layer < depth:
            raise UserError(f"method.layer={layer} is out of range: this model has {depth} decoder layers (0..{depth - 1})")
        if update == "all":  # every parameter (OpenUnlearning's default); those above `layer` get no gradient
            return layer, update
        bad = [i for i in update if not 0 <= i <= layer]
        if bad or not update:
            raise UserError(f"method.update_layers={update} must be non-empty layer indices in 0..{layer} "
                            f"(method.layer={layer}; layers above it do not affect its output)")
        return layer, update

    def prepare(self, model, tokenizer, forget, retain, ctx):
        self.layer_idx, self.update_idx = self.resolve_layers(model)
        hidden = (model.get_base_model() if is_peft(model) else model).config.hidden_size
        g = torch.Generator().manual_seed(int(self.seed))
        u = torch.rand(hidden, generator=g)  # the paper samples U[0,1) and normalises
        self.control = (u / u.norm() * self.steering_coeff).to(model.device)
        if self.needs_retain:
            self.reference = Reference(model, ctx)
            if self.reference.copy is not None:
                layers = decoder_layers(self.reference.copy)
                self.frozen_layer = layers[self.layer_idx]
                # Only layers up to the chosen one ever run on the copy: drop the rest.
                del layers[self.layer_idx + 1 :]
        return forget

    def trainable(self, model) -> None:
        import re

        layers = decoder_layers(model)
        keep = set()
        scopes = [model] if self.update_idx == "all" else [layers[i] for i in self.update_idx]
        for scope in scopes:
            for name, p in scope.named_parameters():
                if self.params is None or re.search(self.params, name):
                    keep.add(id(p))
        if not keep:
            raise UserError(f"method.params={self.params!r} matches no parameter of layers {self.update_idx}")
        for p in model.parameters():
            p.requires_grad_(p.requires_grad and id(p) in keep)
        if not any(p.requires_grad for p in model.parameters()):
            raise UserError(f"method=rmu: nothing trainable in layers {self.update_idx} (with LoRA, target modules "
                            "must include those layers)")

    def counts(self, batch):
        lengths = (batch["labels"] != IGNORE).sum(1).clamp(min=1)
        return {**super().counts(batch), "inverse_lengths": float((1 / lengths.float()).sum())}

    def loss(self, model, batch):
        f = batch["forget"]
        layer = decoder_layers(model)[self.layer_idx]
        h = layer_output(model, layer, f)
        forget = masked_mse(h, self.control.expand_as(h), f["labels"] != IGNORE, self.normalise, f)
        loss, logs = forget, {"forget_mse": forget.item()}
        if self.needs_retain:
            r = batch["retain"]
            h_r = layer_output(model, layer, r)
            with self.reference(model) as ref:
                frozen_layer = self.frozen_layer if self.reference.copy is not None else layer
                frozen = layer_output(ref, frozen_layer, r)
            retain = masked_mse(h_r, frozen, r["labels"] != IGNORE, self.normalise, r)
            loss = loss + self.retain_weight * retain
            logs["retain_mse"] = retain.item()
        return loss, logs
