"""Checks of the command line before Hydra runs, so a typo gets one line instead of Hydra's report.

Unknown group options (`method=nope`) and keys that are not in the composed config
(`trainer.lrr=1`) are caught here by composing the config with Hydra's compose API.
`validate_jobs` then runs the validation phase (`unlearning/validate.py`) on every job of a
launch, so a sweep with one bad point fails before its first job starts (`unlearning --check`
does only this).
"""

from __future__ import annotations

from pathlib import Path

from unlearning.errors import UserError

_TAKES_VALUE = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
                "--experimental-rerun")


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
    overrides, _ = _plain_overrides(args)
    groups = _groups(conf_dir)
    for o in overrides:
        if "=" not in o and not o.startswith("~"):  # ~key deletes a key (Hydra), e.g. ~attacks.prefix_injection
            raise UserError(f"argument {o!r} is not an override; write key=value (or group=option), "
                            "see `unlearning --help`")
        key, value = o.split("=", 1) if "=" in o else (o, "")
        key = key.lstrip("+~")
        if key == "hydra.callbacks.sweep_summary.table" and value not in ("ou_tofu_repro", "null"):
            raise UserError(f"{o}: the sweep-end table is ou_tofu_repro (OU's TOFU repro.md table) or null")
        if key in groups and not key.startswith("hydra"):
            for v in value.replace("[", ",").replace("]", ",").split(","):  # a,b sweeps, [a,b] selections, [a],[b]
                v = v.strip()
                if v and v != "null" and v not in groups[key] and not v.startswith(("choice(", "range(", "glob(")):
                    raise UserError(f"unknown option {key}={v}: conf/{key}/ has {', '.join(groups[key])}")
    sweeping = any(a in ("-m", "--multirun") for a in args)
    plain = [o for o in overrides if not o.split("=", 1)[0].lstrip("+~").startswith("hydra")]
    if sweeping:
        # Sweep values like a=1,2 cannot be composed as one config; check the first value of each.
        plain = [_first_job(o) for o in plain]
    _compose(conf_dir, plain)


def _first_job(override: str) -> str:
    """The override as the first job of a sweep sees it (`a=1,2` -> `a=1`; a deletion `~key` as it is)."""
    if "=" not in override:
        return override
    key, value = override.split("=", 1)
    return f"{key}={_first(value)}"


def _first(value: str) -> str:
    if value.startswith(("choice(", "range(", "interval(", "glob(", "tag(")):
        return "null"
    if value.startswith("[") and "]" in value:  # [a,b] or a sweep of lists [a],[a,b]: the first list
        return value[: value.index("]") + 1]
    if value.startswith("{"):
        return value
    return value.split(",")[0]


def _compose(conf_dir: str, overrides: list[str]) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
    except Exception as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        msg = "; ".join(lines[:2]) if lines else type(e).__name__
        check_attack_keys(_composed_without_attack_keys(conf_dir, overrides), overrides)  # Hydra's hint (+attacks.X...) would
        raise UserError(_unknown_key(conf_dir, overrides, f"{e} {e.__cause__}") or
                        f"bad override: {msg} (see `unlearning --cfg job` for the composed config)") from None
    finally:
        GlobalHydra.instance().clear()
    check_attack_keys(cfg, overrides)


def _composed_or_none(conf_dir: str, overrides: list[str]):
    """The composed config, or None where these overrides do not compose (a second look after an error)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    except Exception:
        return None
    finally:
        GlobalHydra.instance().clear()


def _composed_without_attack_keys(conf_dir: str, overrides: list[str]):
    return _composed_or_none(conf_dir, [o for o in overrides if not o.lstrip("+~").startswith("attacks.")])


def _unknown_key(conf_dir: str, overrides: list[str], error: str) -> str | None:
    """Hydra's "Could not override 'a.b'. To append to your config use +a.b=..." for a misspelt key would have the
    user add the typo: name the keys that node has instead. None where the error is another one."""
    import re

    from omegaconf import OmegaConf

    m = re.search(r"Could not override '([^']+)'", error)
    if not m or "is not in struct" not in error:
        return None
    key = m.group(1)
    parent, _, leaf = key.rpartition(".")
    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    cfg = _composed_or_none(conf_dir, rest) if parent else None
    node = OmegaConf.select(cfg, parent) if cfg is not None else None
    if not OmegaConf.is_dict(node):
        return None
    known = [k for k in node if k != "_target_"]
    if not known:
        return (f"{key}: {parent} has no keys to set here (composed with {' '.join(rest) or 'the defaults'}; a sweep "
                "is checked at the first value of each list first)")
    return (f"{key}: {parent} has no key {leaf!r}; it has {', '.join(known)} (a new key is added with +{key}=..., "
            "only where the code reads it; see `unlearning --cfg job`)")


def check_attack_keys(cfg, overrides: list[str]) -> None:
    """`attacks.<name>.<key>=...` for an attack the `attack` group did not pick would set something no run reads
    (a picked attack's node has its `_target_`). `cfg` None: nothing to check against."""
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        parts = key.split(".")
        if parts[0] != "attacks" or len(parts) < 3 or o.startswith("~"):
            continue
        if cfg is None:
            return
        node = (cfg.get("attacks") or {}).get(parts[1])
        if node is None or not hasattr(node, "get") or node.get("_target_") is None:
            raise UserError(f"{o}: attack {parts[1]} is not picked, so nothing reads attacks.{parts[1]}.*; pick it "
                            f"with attack=[...,{parts[1]}] (conf/attack/) and then set {'.'.join(parts)}")


def job_overrides(overrides: list[str], sweeping: bool) -> list[list[str]]:
    """The override list of every job a launch would run (Hydra's basic-sweeper expansion of a,b and range())."""
    if not sweeping:
        return [overrides]
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    if any(o.is_sweep_override() and not o.is_discrete_sweep() for o in parsed):
        # interval()/tag() searches (Optuna) have no job list before they run: check their first values
        return [[_first_job(o) for o in overrides]]
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def validate_jobs(args: list[str], conf_dir: str, evaluation_only: bool = False) -> int:
    """Validate every job of this launch (no weights loaded, nothing trained); returns the number of jobs.
    `evaluation_only`: the jobs are `unlearning-eval`'s."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from unlearning.validate import validate

    overrides, sweeping = _plain_overrides(args)
    jobs = job_overrides([o for o in overrides if not o.split("=", 1)[0].lstrip("+~").startswith("hydra.")], sweeping)
    for n, job in enumerate(jobs):
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
                cfg = compose(config_name="config", overrides=job, return_hydra_config=True)
        except Exception as e:
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            try:
                check_attack_keys(_composed_without_attack_keys(conf_dir, job), job)
            except UserError as unpicked:
                raise UserError(f"job {n} ({' '.join(job)}): {unpicked}") from None
            raise UserError(f"job {n} ({' '.join(job)}): "
                            + (_unknown_key(conf_dir, job, f"{e} {e.__cause__}") or f"bad override: {'; '.join(lines[:2])}")) from None
        finally:
            GlobalHydra.instance().clear()
        with open_dict(cfg):
            cfg.choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra") or k == "hydra/launcher"}
            del cfg["hydra"]
        try:
            check_attack_keys(cfg, job)
            if evaluation_only:  # unlearning-eval's own checks (the forget split, the reference result)
                from unlearning.evaluate import check_eval

                check_eval(cfg, job)
            validate(cfg, evaluation_only)
        except UserError as e:
            raise UserError(f"job {n} ({' '.join(job) or 'defaults'}): {e}" if sweeping else str(e)) from None
    return len(jobs)


def _plain_overrides(args: list[str]) -> tuple[list[str], bool]:
    out, skip_next = [], False
    for a in args:
        if skip_next:
            skip_next = False
            continue
        if a in _TAKES_VALUE:
            skip_next = True
            continue
        if a.startswith("-"):
            continue
        out.append(a)
    return out, any(a in ("-m", "--multirun") for a in args)


def check_output_dir(args: list[str], create: bool = True) -> None:
    """The run (or sweep) folder must be creatable; Hydra makes it before the job starts and would end in a traceback.
    `create=False` (`--check`): tested without creating it (unlearning/folders.py)."""

    overrides, sweeping = _plain_overrides(args)
    key = "hydra.sweep.dir" if sweeping else "hydra.run.dir"
    given = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == key]
    target = Path(given[-1] if given else "outputs").expanduser().absolute()
    if "${" in str(target):  # an interpolated folder (e.g. ${now:...}): its fixed part is what can fail
        target = Path(str(target).split("${", 1)[0]).parent
    from unlearning.folders import unwritable

    if not create:
        if (why := unwritable(target)) is not None:
            raise UserError(f"cannot create the output folder {target}: {why}; choose another with {key}=...")
        return
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the output folder {target}: {e.strerror or e}; choose another with "
                        f"{key}=...") from None
    if (why := unwritable(target)) is not None:  # made, but not writable (access() would say yes to root)
        raise UserError(f"cannot write into the output folder {target}: {why}; choose another with {key}=...")
