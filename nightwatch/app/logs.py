"""Logging set-up (only the CLI calls it): plain text, or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime

# Fields the code passes as ``extra=`` and the JSON format carries when present.
EXTRA_FIELDS = ("task_id", "from", "to", "epoch", "replica", "attempt")


class JsonFormatter(logging.Formatter):
    def __init__(self, replica: str | None = None) -> None:
        super().__init__()
        self.replica = replica

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in EXTRA_FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                doc[key] = value
        if self.replica and "replica" not in doc:
            doc["replica"] = self.replica
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure(level: str = "info", fmt: str = "text", replica: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(replica))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Everything goes through the handler, so a JSON stream stays one object per line:
    # warnings, and exceptions that escape a thread.
    logging.captureWarnings(True)
    threading.excepthook = _log_thread_exception
    for noisy in ("urllib3", "kubernetes", "psycopg.pool", "alembic"):  # migrations log their own steps
        logging.getLogger(noisy).setLevel(logging.WARNING)
    handler.addFilter(_lost_on_return)  # on the handler: a logger's filter misses its children's records


def _lost_on_return(record: logging.LogRecord) -> bool:
    """SQLAlchemy's pool logs an error with a traceback when the rollback of a connection given
    back to it fails: the server went away under a transaction. The pool has discarded that
    connection and the store has already reported the outage; keep one warning line of it."""
    if (record.name.startswith("sqlalchemy.pool") and record.exc_info
            and record.getMessage().startswith("Exception during reset")):
        error = record.exc_info[1]
        record.msg, record.args = "store: a connection lost under a transaction was discarded (%s)", (error,)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
    return True


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("nightwatch").error(
        "uncaught exception in thread %s", name,
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
    )
