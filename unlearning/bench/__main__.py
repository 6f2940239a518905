"""`unlearning-bench NAME [args]` (or `python -m unlearning.bench NAME`): benchmarks that print numbers.

Each benchmark is a module `unlearning/bench/NAME.py` with a `main(argv)`; it measures
its baseline in the same run and prints ratios against it.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    import unlearning.bench as pkg

    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: unlearning-bench {" + ",".join(names) + "} [options]")
        return 0 if argv else 2
    if argv[0] not in names:
        print(f"unlearning-bench: unknown benchmark {argv[0]!r}; choose one of {names}", file=sys.stderr)
        return 2
    from unlearning.errors import UserError

    try:
        return int(importlib.import_module(f"unlearning.bench.{argv[0]}").main(argv[1:]) or 0)
    except UserError as e:  # bad input (a missing dataset, the hub offline): one line, as the entrypoints do
        print(f"unlearning-bench {argv[0]}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
