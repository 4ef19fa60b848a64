"""The benchmark suite, one module per benchmark (``zeromesh bench``).

:mod:`.common` holds the shared helpers and the result format; :mod:`.suite`
runs benchmarks by name. Modules whose benchmarks host peers in child
processes are also their children's entry points (``python -m
zeromesh.bench.converge``, ``.churn``, ``.pyre``). This package imports nothing
itself, so a child pays only for its own module.
"""

#: Benchmark names (each a module here), in the order ``zeromesh bench all`` runs them.
NAMES = ("join", "converge", "idle", "leave", "discovery", "data", "proxy", "scaling", "interest", "churn", "pyre")
