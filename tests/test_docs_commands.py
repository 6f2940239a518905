"""Every `unlearning` / `unlearning-eval` / `torchrun -m unlearning` command quoted in the README and docs/ still
parses and validates (`unlearning --check`: composition, every component built and checked, nothing run).

Commands with a placeholder (`<...>`, a shell variable), that continue a run which must exist first (`resume=`) or
that are marked `# needs the hub` are left out; everything else is validated as written.
"""

from __future__ import annotations

import re
import shlex

import pytest
from conftest import CONF_DIR, ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ENTRY = re.compile(r"^(?:\.venv/bin/)?(?:python -m unlearning|unlearning-eval|unlearning)(?=\s|$)")


def commands() -> list[tuple[str, str, int]]:
    """(page, command line, processes) for every quoted entrypoint command in a ```bash block."""
    found = []
    for page in PAGES:
        block, lines = False, page.read_text().splitlines()
        joined, buf = [], ""
        for line in lines:
            if line.startswith("```"):
                block = line.strip() == "```bash" and not block
                continue
            if not block:
                continue
            buf += line.rstrip("\\").strip() + " "
            if not line.rstrip().endswith("\\"):
                joined.append(buf.strip())
                buf = ""
        for cmd in joined:
            if "# needs the hub" in cmd:  # validated by its own test with a local stand-in (test_hub_stages.py)
                continue
            cmd = cmd.split(" #", 1)[0].strip()
            while re.match(r"^[A-Z_]+=\S*\s", cmd):  # leading environment assignments
                cmd = cmd.split(None, 1)[1]
            procs = 1
            m = re.match(r"^torchrun\s+--nproc_per_node[ =](\d+)\s+-m unlearning(\s.*)?$", cmd)
            if m:
                procs, cmd = int(m.group(1)), "unlearning" + (m.group(2) or "")
            if not ENTRY.match(cmd) or any(s in cmd for s in ("<", "resume=", "...", "$")):
                continue
            found.append((page.name, cmd, procs))
    return found


COMMANDS = commands()


def test_the_docs_quote_commands():
    assert len(COMMANDS) >= 15, COMMANDS  # the README's examples and the docs' commands


@pytest.mark.parametrize("page, cmd, procs", COMMANDS, ids=[f"{p}:{c[:60]}" for p, c, _ in COMMANDS])
def test_quoted_command_validates(page, cmd, procs, data_dir, monkeypatch, tmp_path):
    from unlearning.cli_checks import check_overrides, validate_jobs

    args = shlex.split(ENTRY.sub("", cmd, count=1))
    args = [a for a in args if a != "--check"]
    monkeypatch.setenv("WORLD_SIZE", str(procs))
    monkeypatch.chdir(tmp_path)  # relative paths (outputs/...) resolve in a scratch folder
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # as from the repository root: examples/lm_eval/...
    check_overrides(args, CONF_DIR)
    assert validate_jobs(args, CONF_DIR) >= 1
