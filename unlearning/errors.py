"""One clear line for bad input.

`UserError` carries a message that says what is wrong, where (config key, file and
line) and how to fix it. The entrypoint prints it as one line and exits non-zero;
a traceback is shown only with `UNLEARNING_TRACEBACK=1` (or `hydra.verbose=true`).
"""

from __future__ import annotations

import json
from pathlib import Path


class UserError(Exception):
    """Bad input from the user: config values, paths, data files."""

    exit_code = 2


class Diverged(Exception):
    """A loss term became NaN or inf: the run stops with status "diverged" (exit code 3)."""

    exit_code = 3

    def __init__(self, step: int, term: str, value: float):
        self.step, self.term, self.value = step, term, value
        super().__init__(f"training diverged at step {step}: loss term {term!r} is {value}; "
                         "lower trainer.lr or the method's coefficients (results so far are kept)")


def reject_unknown(group: str, name: str, unknown, known) -> None:
    """Constructors take `**unknown` so a misspelt YAML key is one clear line, not a TypeError or a silent no-op."""
    if unknown:
        raise UserError(f"unknown option(s) {sorted(unknown)} for {group}={name}; known: {sorted(known)} "
                        f"(see conf/{group}/{name}.yaml)")


def require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def read_json_lines(path: str | Path) -> list[dict]:
    """Read a JSON Lines file; a malformed line is reported with file and line number."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file not found: {path} (set UNLEARNING_DATA_DIR or dataset.path to the folder that holds it)")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"malformed JSON in {path}:{lineno}: {e.msg} (column {e.colno}); fix or remove that line") from None
    return rows


def read_json(path: str | Path):
    """Read a whole-file JSON document, naming the file and line of a syntax error."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file not found: {path} (set UNLEARNING_DATA_DIR or dataset.path to the folder that holds it)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"malformed JSON in {path}:{e.lineno}: {e.msg} (column {e.colno})") from None
