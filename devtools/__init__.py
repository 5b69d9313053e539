"""What the tests and the benchmarks share to set up and meter real servers and processes.

PostgreSQL servers and databases (:mod:`devtools.postgres`), ``edgesearch pooler`` in front of one
(:mod:`devtools.pooler`), free ports (:mod:`devtools.ports`), CPU time read from /proc (:mod:`devtools.proc_cpu`),
worker processes that train nothing (:mod:`devtools.stand_in`), forked and released together
(:mod:`devtools.forked`), and the round trips a process sends to its databases (:mod:`devtools.sql_traffic`).

Not part of the edgesearch distribution: pyproject.toml's package search includes ``edgesearch*`` only.
Tests find it because pytest puts the repository root on ``sys.path``; benchmark scripts because
``benchmarks/_common.py`` does.
"""
