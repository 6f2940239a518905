"""Checks of the command line before Hydra runs, so a typo gets one line instead of Hydra's report.

Unknown group options (`method=nope`) and keys that are not in the composed config
(`trainer.lrr=1`) are caught here by composing the config with Hydra's compose API.
"""

from __future__ import annotations

from pathlib import Path

from unlearning.errors import UserError

_FLAGS = {"-m", "--multirun", "--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "--resolve",
          "--package", "-p", "--version", "--shell-completion", "-sc", "--config-path", "-cp",
          "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"}


def _groups(conf_dir: str) -> dict[str, list[str]]:
    root = Path(conf_dir)
    out = {}
    for d in root.rglob("*"):
        if d.is_dir():
            opts = sorted(p.stem for p in d.glob("*.yaml"))
            if opts:
                out[str(d.relative_to(root))] = opts
    return out


def check_overrides(args: list[str], conf_dir: str) -> None:
    if any(a in ("--help", "-h", "--hydra-help", "--info", "--shell-completion", "-sc") for a in args):
        return
    overrides = []
    skip_next = False
    for a in args:
        if skip_next:
            skip_next = False
            continue
        if a in ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                 "--config-dir", "-cd", "--experimental-rerun"):
            skip_next = a not in ()
            continue
        if a in _FLAGS or a.startswith("-"):
            continue
        overrides.append(a)
    groups = _groups(conf_dir)
    for o in overrides:
        if "=" not in o:
            raise UserError(f"argument {o!r} is not an override; write key=value (or group=option), "
                            "see `unlearning --help`")
        key, value = o.split("=", 1)
        key = key.lstrip("+~")
        if key in groups and not key.startswith("hydra"):
            for v in value.split(","):
                v = v.strip()
                if v and v != "null" and v not in groups[key] and not v.startswith(("choice(", "range(", "glob(")):
                    raise UserError(f"unknown option {key}={v}: conf/{key}/ has {', '.join(groups[key])}")
    sweeping = any(a in ("-m", "--multirun") for a in args)
    plain = [o for o in overrides if not o.split("=", 1)[0].lstrip("+~").startswith("hydra")]
    if sweeping:
        # Sweep values like a=1,2 cannot be composed as one config; check the first value of each.
        plain = [o.split("=", 1)[0] + "=" + _first(o.split("=", 1)[1]) for o in plain]
    _compose(conf_dir, plain)


def _first(value: str) -> str:
    if value.startswith(("choice(", "range(", "interval(", "glob(", "tag(")) or value.startswith(("[", "{")):
        return value if not value.startswith(("choice(", "range(", "interval(", "glob(", "tag(")) else "null"
    return value.split(",")[0]


def _compose(conf_dir: str, overrides: list[str]) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
            compose(config_name="config", overrides=overrides)
    except Exception as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        msg = "; ".join(lines[:2]) if lines else type(e).__name__
        raise UserError(f"bad override: {msg} (see `unlearning --cfg job` for the composed config)") from None
    finally:
        GlobalHydra.instance().clear()
