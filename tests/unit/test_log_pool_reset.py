"""A connection the pool cannot roll back (the server went away under a transaction) is one
warning line, not an error with a traceback: the store reports the outage itself."""

from __future__ import annotations

import io
import json
import logging

from nightwatch.app import logs


def test_a_failed_pool_reset_is_one_warning_line() -> None:
    logs.configure("info", "json")
    buffer = io.StringIO()
    logging.getLogger().handlers[0].stream = buffer  # type: ignore[attr-defined]
    try:
        raise ConnectionError("Lost connection to MySQL server during query")
    except ConnectionError:
        logging.getLogger("sqlalchemy.pool.impl.QueuePool").exception("Exception during reset or similar")
        logging.getLogger("nightwatch.app").exception("a bug")  # other errors keep theirs

    pool, ours = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert pool["level"] == "warning" and "exc" not in pool
    assert "discarded (Lost connection to MySQL server during query)" in pool["msg"]
    assert ours["level"] == "error" and "Traceback" in ours["exc"]
