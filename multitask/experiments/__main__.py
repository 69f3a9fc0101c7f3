"""A sweep's --jobs worker: `python -m multitask.experiments '{"config": ...}' 1` (what workers.spawn_worker starts).

The package's own entry, not `-m multitask.experiments.workers`: the package's `__init__` imports workers, and running
a module the package has already imported would load it twice."""
import sys

from .workers import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
