"""The round trips a process sends to its databases, counted by SQLAlchemy's events as they happen.

For benchmarks of the storage path: what a worker asks of the database per trial, whatever the server.
"""

from __future__ import annotations

import logging
from typing import Any

CONNECTION_LOGGERS = ("edgesearch.searcher.storage.reconnecting", "edgesearch.searcher.storage._optuna")
"""The loggers that warn of a storage call retried for want of a connection, and of a failed heartbeat."""


def count_traffic() -> dict[str, int]:
    """Counters of what this process sends to databases from now on, kept up to date by SQLAlchemy's events.

    ``round_trips``: statements (SAVEPOINTs too), and the BEGINs, COMMITs and ROLLBACKs of connections
    not in autocommit (each one exchange with the server);
    ``connects``: new connections; ``connection_warnings``: storage calls that failed for want of a
    connection and were retried (the reconnecting storage logs each), and failed heartbeats.
    """
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    counts = {"round_trips": 0, "connects": 0, "connection_warnings": 0}

    def trip(*args: Any, **kwargs: Any) -> None:
        counts["round_trips"] += 1

    def transaction_trip(conn: Any, *args: Any, **kwargs: Any) -> None:
        # On a connection in autocommit a BEGIN, COMMIT or ROLLBACK of SQLAlchemy's sends nothing.
        if not getattr(conn.connection.dbapi_connection, "autocommit", False):
            counts["round_trips"] += 1

    def connect(*args: Any, **kwargs: Any) -> None:
        counts["connects"] += 1

    event.listen(Engine, "before_cursor_execute", trip)
    for name in ("begin", "commit", "rollback"):
        event.listen(Engine, name, transaction_trip)
    event.listen(Pool, "connect", connect)

    class Warnings(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            counts["connection_warnings"] += 1

    handler = Warnings(level=logging.WARNING)
    for logger in CONNECTION_LOGGERS:
        logging.getLogger(logger).addHandler(handler)
    return counts
