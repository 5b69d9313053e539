"""Every use of Optuna's private API, in one place with a small typed surface.

Optuna's public ``Study``/``Trial`` hide their storage and ids, but a worker that runs its own heartbeat,
hands trials back and counts slots in one statement needs them. Everything that reaches past the public
API lives in this package, so an Optuna upgrade means reading it (and the schema pin of
:mod:`edgesearch.searcher.storage.sqlite_summaries`); a test fails if any other module of edgesearch
imports ``optuna.*._*``, uses a private attribute of an Optuna object or overrides a private method of an
Optuna class:

- ``handles.py``: the storage and ids behind a study or trial; heartbeat, hand-back, ask and tell;
- ``queries.py``: SQL over Optuna's tables (reads and one-statement writes);
- ``routing.py``: the ``RDBStorage`` to subclass, every database call routed through one hook.
"""
