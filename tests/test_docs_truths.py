"""What the README, docs/ and `unlearning --help` tell a user holds against conf/ and the code, so a renamed key, a
new option or an unread environment variable fails CI instead of misleading a reader.

- every override quoted inline (`key=value`, `group=option`, several in one span) names a key or an option that
  exists (the quoted commands in ```bash blocks are validated whole by test_docs_commands.py);
- every example in `unlearning --help` validates as a command;
- every UNLEARNING_* environment variable the docs name is read somewhere, and every one read is documented;
- the README's config-group table lists exactly the options in conf/, and its TOFU method table says how many of
  the methods it shows and names the rest;
- no project page cites the tracker or a work session (words a user cannot follow).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from conftest import CONF_DIR, ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONF = Path(CONF_DIR)
TOKEN = re.compile(r"^\+{0,2}~?[a-z_][a-z0-9_]*(?:[./][a-z0-9_]+)*=\S*$")
PLACEHOLDER = re.compile(r"<|\.\.\.|=$|=[A-Z]$|\$")
# Inline spans that quote another tool's override on purpose (OpenUnlearning's own, beside ours).
OTHER_TOOLS = {"model=Llama-3.2-1B-Instruct"}
# Spans the docs quote as examples of bad input (each must stay bad: the test checks it is refused).
SHOWN_AS_REFUSED = {"attack=[nope]", "method=nope", "trainer.lrr=1"}
# Hydra's own launcher and sweeper plugins, selectable without a file in conf/.
HYDRA_PLUGINS = {"hydra/launcher": {"basic", "joblib", "submitit_local", "submitit_slurm"},
                 "hydra/sweeper": {"basic", "optuna"}}


def inline_overrides() -> list[tuple[str, int, str]]:
    """(page, line, span) for every inline code span outside code blocks made only of override tokens."""
    found = []
    for page in PAGES:
        block = False
        for n, line in enumerate(page.read_text().splitlines(), 1):
            if line.startswith("```"):
                block = not block
                continue
            if block:
                continue
            for span in re.findall(r"`([^`]+)`", line):
                tokens = span.split()
                if tokens and all(TOKEN.match(t) for t in tokens):
                    found.append((page.name, n, span))
    return found


def groups() -> dict[str, set[str]]:
    out = {}
    for d in sorted(p for p in CONF.rglob("*") if p.is_dir()):
        options = {f.stem for f in d.glob("*.yaml")}
        if options:
            out[str(d.relative_to(CONF))] = options
    return out


def _flat(node, prefix: str, into: set[str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "defaults":
                continue
            key = f"{prefix}.{k}" if prefix else str(k)
            into.add(key)
            _flat(v, key, into)


def known_keys() -> set[str]:
    """Every dotted key some option of some group (or the primary config) can put in the composed config."""
    keys: set[str] = set()
    _flat(yaml.safe_load((CONF / "config.yaml").read_text()), "", keys)
    for group, options in groups().items():
        for option in options:
            path = CONF / group / f"{option}.yaml"
            text = path.read_text()
            m = re.search(r"^# @package (\S+)", text, re.M)
            package = m.group(1) if m else group.replace("/", ".")
            _flat(yaml.safe_load(text) or {}, "" if package == "_global_" else package, keys)
    return keys


def _hydra_composes(tokens: list[str]) -> str | None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            compose(config_name="config", overrides=tokens, return_hydra_config=True)
    except Exception as e:  # noqa: BLE001 - the message is the finding
        return str(e).splitlines()[0]
    finally:
        GlobalHydra.instance().clear()
    return None


def problems_of(span: str, keys: set[str], options: dict[str, set[str]], top: set[str]) -> list[str]:
    tokens = span.split()
    if span in OTHER_TOOLS or PLACEHOLDER.search(span):
        return []
    if any(t.lstrip("+~").startswith("hydra") for t in tokens):  # Hydra's own keys: let Hydra compose it
        tokens = [t for t in tokens if t.lstrip("+~").split("=")[0].split(".")[0].split("/")[0] in top | {"hydra"}]
        err = _hydra_composes([t for t in tokens if "," not in t])
        return [f"`{span}`: {err}"] if err else []
    found = []
    for t in tokens:
        key, value = t.split("=", 1)
        bare = key.lstrip("+~")
        if bare.split(".")[0] not in top:
            continue  # a bare argument of a function or a loss (`retain_loss=kl` beside `method.retain_loss`)
        if bare in options:
            for v in re.split(r"[,|]", value.strip("[]")):  # a,b sweeps and a|b "one of" in prose
                if v and v != "null" and v not in options[bare] and not v.startswith(("choice(", "range(")):
                    found.append(f"`{span}`: {bare}={v} is not an option (conf/{bare}/ has "
                                 f"{', '.join(sorted(options[bare]))})")
        elif not key.startswith("+") and bare not in keys:
            found.append(f"`{span}`: no config key {bare}")
    return found


def test_every_inline_override_names_a_real_key_or_option():
    spans = inline_overrides()
    assert len(spans) >= 150, len(spans)  # the docs quote a few hundred; a parser that finds none proves nothing
    keys, options = known_keys(), groups()
    top = {k for k in keys if "." not in k} | set(options)
    bad = [f"{page}:{line}: {p}" for page, line, span in spans if span not in SHOWN_AS_REFUSED
           for p in problems_of(span, keys, options, top)]
    assert not bad, "\n".join(bad)
    quoted = {span for _, _, span in spans}
    for span in SHOWN_AS_REFUSED:
        assert span in quoted and problems_of(span, keys, options, top), span


def test_the_checker_catches_a_renamed_key_and_a_missing_option():
    """The rule itself, on spans written to be wrong (the kinds the docs once had)."""
    keys, options = known_keys(), groups()
    top = {k for k in keys if "." not in k} | set(options)
    assert problems_of("method.beta=0.1", keys, options, top) == []  # NPO's key
    assert problems_of("method.odds_ratio_weight=0.1", keys, options, top) == []  # ORPO's
    assert problems_of("method.odds_ratio=0.1", keys, options, top) == ["`method.odds_ratio=0.1`: no config key "
                                                                        "method.odds_ratio"]
    assert problems_of("trainer.eval.lm_eval=false", keys, options, top) == [
        "`trainer.eval.lm_eval=false`: no config key trainer.eval.lm_eval"]
    assert problems_of("+trainer.eval.lm_eval=false", keys, options, top) == []
    assert problems_of("experiment=tofu_tiny_ga", keys, options, top)[0].startswith(
        "`experiment=tofu_tiny_ga`: experiment=tofu_tiny_ga is not an option")
    assert problems_of("method=ga,npo,nope", keys, options, top)[0].startswith("`method=ga,npo,nope`: method=nope")
    assert problems_of("hydra/launcher=joblib hydra.launcher.n_jobs=4", keys, options, top) == []
    assert problems_of("hydra.launcher.no_such_field=4", keys, options, top) != []


def help_examples(app: str = "unlearning") -> list[str]:
    """The example commands of `<app> --help` (conf/hydra/help/<app>.yaml's footer)."""
    footer = yaml.safe_load((CONF / "hydra" / "help" / f"{app.replace('-', '_')}.yaml").read_text())["footer"]
    return [line.split("#", 1)[0].strip() for line in footer.splitlines()
            if line.strip().split(" ", 1)[0] == app]


@pytest.mark.parametrize("example", help_examples() + help_examples("unlearning-eval"))
def test_help_examples_validate(example, data_dir, monkeypatch, tmp_path):
    from unlearning.cli_checks import check_overrides, validate_jobs

    app, *args = shlex.split(example)
    if args[:1] == ["--cfg"]:
        return
    monkeypatch.chdir(tmp_path)
    check_overrides(args, CONF_DIR)
    assert validate_jobs(args, CONF_DIR, evaluation_only=app == "unlearning-eval") >= 1


def test_help_shows_examples():
    assert len(help_examples()) >= 4 and len(help_examples("unlearning-eval")) >= 3
    assert any("--check" in e for e in help_examples())


ENV = re.compile(r"\bUNLEARNING_[A-Z0-9_]*[A-Z0-9]")


def _env_names(paths) -> set[str]:
    return {m for p in paths if p.is_file() for m in ENV.findall(p.read_text(errors="ignore"))}


def test_every_environment_variable_documented_is_read_and_every_one_read_is_documented():
    code = [*ROOT.joinpath("unlearning").rglob("*.py"), *CONF.rglob("*.yaml"), ROOT / "Makefile",
            *ROOT.joinpath("tests").glob("*.py"), *ROOT.joinpath(".ci").rglob("*")]
    code = [p for p in code if p.name != Path(__file__).name]
    read, documented = _env_names(code), _env_names(PAGES)
    assert "UNLEARNING_DATA_DIR" in read and "UNLEARNING_DATA_DIR" in documented
    assert not documented - read, f"documented but read nowhere: {sorted(documented - read)}"
    assert not read - documented, f"read but not documented: {sorted(read - documented)}"


def _readme_group_rows() -> dict[str, str]:
    text = (ROOT / "README.md").read_text().split("## Config groups", 1)[1]
    rows = {}
    for line in text.splitlines()[3:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip("|"))]  # a\|b inside a cell
        rows[cells[0].strip("`")] = cells[1]
    return rows


def test_readme_group_table_lists_every_option():
    rows, options = _readme_group_rows(), groups()
    assert {"model", "method", "dataset", "evaluator", "attack", "distributed", "hydra/launcher"} <= set(rows)
    for group, cell in rows.items():
        if group in ("experiment", "trainer", "generation", "sizing"):
            continue  # described, not enumerated (presets; one option each)
        listed = set(re.findall(r"`([a-z0-9_]+)`", cell))
        have = options.get(group, set())
        assert have <= listed, f"README's {group} row misses {sorted(have - listed)}"
        extra = listed - have - HYDRA_PLUGINS.get(group, set()) - {"none"}
        assert not extra, f"README's {group} row names options conf/{group}/ lacks: {sorted(extra)}"


NUMBERS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                                      "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split())}


def test_readme_method_table_says_how_many_it_shows_and_names_the_rest():
    text = (ROOT / "README.md").read_text().split("## Methods on TOFU", 1)[1].split("\n## ", 1)[0]
    m = re.search(r"(\w+) of the (\w+) methods", text)
    assert m, "the section says 'N of the M methods'"
    shown, total = NUMBERS[m.group(1).lower()], NUMBERS[m.group(2).lower()]
    table = text.split("<!-- table:tofu_methods -->")[1].split("<!-- /table:tofu_methods -->")[0]
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")][1:]
    methods = [r for r in rows if r not in ("reference", "target")]
    assert len(methods) == shown, (m.group(0), methods)
    assert total == len(groups()["method"]), f"{m.group(0)}, but conf/method/ has {len(groups()['method'])}"
    rest = text.split("Not in the table:", 1)[1].split("What each loss is")[0]
    named = set(re.findall(r"`([a-z0-9_]+)`", rest)) & groups()["method"]
    assert len(named) == total - shown, f"the rest named: {sorted(named)}"


STALE = re.compile(r"\bissues? #?\d+\b|\bthis session\b|\bthe seed's\b", re.I)


def test_no_page_cites_the_tracker_or_a_session():
    files = [*PAGES, *CONF.rglob("*.yaml"), ROOT / "Makefile", *ROOT.joinpath("unlearning").rglob("*.py"),
             *ROOT.joinpath("examples").rglob("*.md")]
    bad = [f"{p.relative_to(ROOT)}:{n}: {line.strip()[:100]}" for p in files
           for n, line in enumerate(p.read_text().splitlines(), 1) if STALE.search(line)]
    assert not bad, "\n".join(bad)
