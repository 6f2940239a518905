"""OmegaConf resolvers the configs use (registered when `unlearning` is imported, before any config resolves).

`${tofu_ou:<model path>}` / `${tofu_ou:<model path>,<forget split>}`: OpenUnlearning's published TOFU models on the
hub, `open-unlearning/tofu_<model name>_full` (the fine-tuned target) and `..._retain<99|95|90>` (the retain model
of forget01 / forget05 / forget10), named after the last part of the model's path.
"""

from __future__ import annotations

from omegaconf import OmegaConf

RETAIN = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}


def tofu_ou(model_path: str, forget_split: str | None = None) -> str:
    name = str(model_path).rstrip("/").split("/")[-1]
    if forget_split is None:
        return f"open-unlearning/tofu_{name}_full"
    if forget_split not in RETAIN:
        from unlearning.errors import UserError

        raise UserError(f"dataset.forget_split={forget_split!r}: OpenUnlearning publishes retain models for "
                        f"{sorted(RETAIN)} only")
    return f"open-unlearning/tofu_{name}_{RETAIN[forget_split]}"


OmegaConf.register_new_resolver("tofu_ou", tofu_ou, replace=True)
