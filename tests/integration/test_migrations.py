"""The Alembic migrations on every SQL database: from empty, from the user's own table, from
a database nightwatch 0.1 made; replicas at once; the ``--sql`` script applied by hand."""

from __future__ import annotations

import fcntl
import re
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from sql_databases import SEED_DIR, mysql_database, postgres_database, postgres_execute, sql_statements

from nightwatch.adapters.store import migrations
from nightwatch.domain.errors import BackendUnavailableError, ConfigError

pytestmark = pytest.mark.timeout(120)

FIXTURES = Path(__file__).parent / "fixtures"


@dataclass
class Database:
    """One throw-away database: ``engine`` for nightwatch, ``run`` for SQL the way a user or a
    DBA would type it (outside SQLAlchemy), ``new()`` another empty database of the same kind."""
    kind: str
    make_engine: Callable[[], sa.Engine]  # another replica's engine on this database
    run: Callable[..., None]
    new: Callable[[], Database]
    engine: sa.Engine = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.engine = self.make_engine()


def _script(text: str) -> list[str]:
    return sql_statements(text)


def _sqlite(stack: ExitStack, tmp_path: Path) -> Database:
    counter = iter(range(1000))

    def new() -> Database:
        path = tmp_path / f"db{next(counter)}" / "nightwatch.db"
        path.parent.mkdir()
        def make_engine() -> sa.Engine:
            engine = sa.create_engine(f"sqlite:///{path}", isolation_level="AUTOCOMMIT")  # as the store's
            stack.callback(engine.dispose)
            return engine

        def run(*statements: str) -> None:
            with closing(sqlite3.connect(path, isolation_level=None)) as conn:
                for s in statements:
                    conn.execute(s)

        return Database("sqlite", make_engine, run, new)

    return new()


def _mysql(stack: ExitStack, url: str) -> Database:
    def new() -> Database:
        server, name = stack.enter_context(mysql_database(url))
        def make_engine() -> sa.Engine:
            engine = sa.create_engine(sa.URL.create(
                "mysql+pymysql", username=server.user, password=server.password or None, host=server.host,
                port=server.port, database=name, query={"charset": "utf8mb4"}), isolation_level="AUTOCOMMIT")
            stack.callback(engine.dispose)
            return engine

        return Database("mysql", make_engine, lambda *s: server.execute(name, *s), new)

    return new()


def _postgres(stack: ExitStack, admin_dsn: str) -> Database:
    def new() -> Database:
        dsn = stack.enter_context(postgres_database(admin_dsn))
        def make_engine() -> sa.Engine:
            engine = sa.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(dsn),
                                      isolation_level="AUTOCOMMIT")
            stack.callback(engine.dispose)
            return engine

        return Database("postgresql", make_engine, lambda *s: postgres_execute(dsn, *s), new)

    return new()


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql),
                        pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with ExitStack() as stack:
        if request.param == "sqlite":
            yield _sqlite(stack, tmp_path)
        elif request.param == "mysql":
            yield _mysql(stack, request.getfixturevalue("mysql_url"))
        else:
            yield _postgres(stack, request.getfixturevalue("postgres_dsn"))


def seed(db: Database) -> None:
    db.run(*_script((SEED_DIR / f"task-table.{'postgres' if db.kind == 'postgresql' else db.kind}.sql").read_text()))


def release_0_1(db: Database) -> None:
    db.run(*_script((FIXTURES / f"nightwatch-0.1.{'postgres' if db.kind == 'postgresql' else db.kind}.sql")
                    .read_text()))


def statements_of(engine: sa.Engine) -> list[str]:
    """Every statement nightwatch sends on ``engine`` from now on."""
    seen: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda conn, cursor, statement, *rest: seen.append(statement))
    return seen


def schema(engine: sa.Engine) -> dict[str, Any]:
    """The schema as SQLAlchemy's inspector sees it, comparable across two databases."""
    inspector = sa.inspect(engine)
    out: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        columns = [(c["name"], str(c["type"]), c["nullable"], _default(c.get("default")))
                   for c in inspector.get_columns(table)]
        indexes = sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                         for i in inspector.get_indexes(table))
        uniques = sorted((u["name"], tuple(u["column_names"])) for u in inspector.get_unique_constraints(table))
        out[table] = {"columns": columns, "indexes": indexes, "uniques": uniques,
                      "pk": inspector.get_pk_constraint(table)["constrained_columns"]}
    return out


def _default(value: Any) -> Any:
    # The sequence a SERIAL column's default names carries the table's own name: keep the shape.
    return re.sub(r"nextval\('[^']*'::regclass\)", "nextval(...)", str(value)) if value is not None else None


def index_columns(engine: sa.Engine, table: str = "task") -> dict[str, list[str]]:
    return {str(i["name"]): list(i["column_names"]) for i in sa.inspect(engine).get_indexes(table)}


def tasks(engine: sa.Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text("SELECT id, name, status FROM task ORDER BY id"))]


def assert_at_head(engine: sa.Engine) -> None:
    assert migrations.current(engine) == migrations.head()
    columns = {c["name"]: c for c in sa.inspect(engine).get_columns("task")}
    assert columns["message"]["nullable"] is True
    assert index_columns(engine)["idx_task_status_id"] == ["status", "id"]
    assert "idx_task_status" not in index_columns(engine)
    assert {c["name"] for c in sa.inspect(engine).get_columns("nightwatch_leader")} == {"name", "epoch"}
    assert columns["attempt"]["nullable"] is False
    assert all(columns[c]["nullable"] for c in LIFECYCLE[1:])
    assert index_columns(engine)["idx_task_namespace_id"] == ["namespace", "id"]
    assert index_columns(engine, "task_event") == {"idx_task_event_task_id": ["task_id", "id"],
                                                   "idx_task_event_at": ["at"]}
    assert [c["name"] for c in sa.inspect(engine).get_columns("task_event")] == [
        "id", "task_id", "attempt", "at", "from_status", "to_status", "message", "epoch", "replica"]


LIFECYCLE = ["attempt", "cancel_requested_at", "cancel_reason", "retry_at", "finished_at"]  # 0005


# -- from empty, from the seed, from 0.1 ------------------------------------------------------

def test_upgrade_from_empty_creates_the_task_table_a_user_can_insert_into(db: Database) -> None:
    assert migrations.current(db.engine) is None
    migrations.upgrade(db.engine)
    assert_at_head(db.engine)
    db.run("INSERT INTO task (name, namespace, info) VALUES ('t1', 'default', '{}')")  # as the user's system does
    assert tasks(db.engine) == [(1, "t1", "Normal")]


def test_upgrade_from_the_seed_table_keeps_its_rows_and_adds_only_nightwatchs_parts(db: Database) -> None:
    seed(db)
    before = schema(db.engine)["task"]
    migrations.upgrade(db.engine)
    assert_at_head(db.engine)
    assert tasks(db.engine) == [(1, "demo-task-1", "Normal"), (2, "demo-task-2", "Normal")]
    after = schema(db.engine)["task"]
    n = len(before["columns"])
    assert after["columns"][:n] == before["columns"]  # the user's columns untouched, nightwatch's appended
    assert [c[0] for c in after["columns"][n:]] == ["message", *LIFECYCLE]
    assert after["uniques"] == before["uniques"]


def test_a_database_made_by_0_1_is_stamped_and_its_ddl_not_run_again(db: Database) -> None:
    release_0_1(db)
    sent = statements_of(db.engine)
    migrations.upgrade(db.engine)
    assert_at_head(db.engine)
    ddl = [s for s in sent if re.match(r"\s*(CREATE|ALTER|DROP)\b", s, re.I)]
    touched = [s for s in ddl if "nightwatch_alembic_version" not in s]
    # 0.1 made the task table, message and nightwatch_leader: only the (status, id) index, 0005, 0006 and 0007 are new
    assert touched and all(re.search(r"idx_task_status|task_event|idx_task_namespace_id|nightwatch_replica|"
                                     r"nightwatch_leader_change|nightwatch_task_notify|" + "|".join(LIFECYCLE), s)
                           for s in touched), touched
    assert not any(re.search(r"ADD COLUMN message|CREATE TABLE (IF NOT EXISTS )?(task|nightwatch_leader)\b", s, re.I)
                   for s in sent)
    assert tasks(db.engine) == [(1, "old-task", "Failed")]
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT epoch FROM nightwatch_leader")).scalar() == 7


def test_a_0_1_database_that_lost_a_part_is_not_stamped_and_gets_the_part_back(db: Database) -> None:
    release_0_1(db)
    db.run("DROP TABLE nightwatch_leader")  # nightwatch_schema says version 1, but the schema is not 0.1's
    migrations.upgrade(db.engine)
    assert_at_head(db.engine)
    assert tasks(db.engine) == [(1, "old-task", "Failed")]


def test_upgrade_at_head_sends_no_ddl_and_takes_no_lock(db: Database) -> None:
    migrations.upgrade(db.engine)
    sent = statements_of(db.engine)
    migrations.upgrade(db.engine)
    assert sent, "upgrade did not even look at the version"
    assert not [s for s in sent if re.search(r"\b(CREATE|ALTER|DROP|GET_LOCK|advisory)\b", s, re.I)], sent


def test_current_names_the_revision_a_database_is_at(db: Database) -> None:
    seed(db)
    migrations.upgrade(db.engine)
    db.run("UPDATE nightwatch_alembic_version SET version_num = '0003'")  # as an older nightwatch left it
    assert migrations.current(db.engine) == "0003" != migrations.head()
    migrations.upgrade(db.engine)
    assert_at_head(db.engine)


def test_a_schema_a_newer_nightwatch_migrated_is_refused_in_one_line(db: Database) -> None:
    migrations.upgrade(db.engine)
    db.run("UPDATE nightwatch_alembic_version SET version_num = '0999'")
    with pytest.raises(ConfigError, match="schema is at revision 0999, which this nightwatch .* does not know"):
        migrations.upgrade(db.engine)


@pytest.mark.parametrize("db", [pytest.param("mysql", marks=pytest.mark.mysql),
                                pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_ddl_the_server_refuses_for_good_stops_naming_the_revision(db: Database) -> None:
    """Not an outage to retry: a MyISAM table cannot take LOCK=NONE, a name is taken already."""
    seed(db)
    if db.kind == "mysql":
        db.run("ALTER TABLE task ENGINE=MyISAM")
        revision = "0002"
    else:
        db.run("CREATE TABLE idx_task_status_id (x int)")  # the index's name, taken by a table
        revision = "0004"
    with pytest.raises(ConfigError, match=rf"^schema migration {revision} failed: .+") as e:
        migrations.upgrade(db.engine)
    assert "\n" not in str(e.value)


# -- how the index is built --------------------------------------------------------------------

@pytest.mark.parametrize("db", [pytest.param("mysql", marks=pytest.mark.mysql),
                                pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_the_index_on_the_users_table_is_built_without_blocking_writes(db: Database) -> None:
    seed(db)
    sent = statements_of(db.engine)
    migrations.upgrade(db.engine)
    for index in ("idx_task_status_id", "idx_task_namespace_id"):
        [create] = [s for s in sent if index in s]
        if db.kind == "postgresql":
            assert create.startswith("CREATE INDEX CONCURRENTLY")
        else:
            assert create.endswith("ALGORITHM=INPLACE, LOCK=NONE")
    [add] = [s for s in sent if "ADD COLUMN attempt" in s]  # the five columns in one statement
    assert all(f"ADD COLUMN {c} " in add for c in LIFECYCLE), add
    if db.kind == "mysql":
        assert add.endswith("ALGORITHM=INSTANT")  # no copy of the user's table
    else:
        assert "NOT NULL DEFAULT 1" in add  # a constant default: a catalogue change, no rewrite


@pytest.mark.mysql
def test_on_mariadb_a_table_that_cannot_add_columns_instantly_gets_them_in_place_without_a_lock(
        mysql_url: str) -> None:
    with ExitStack() as stack:
        db = _mysql(stack, mysql_url)
        seed(db)
        db.run("ALTER TABLE task ROW_FORMAT=COMPRESSED")  # InnoDB cannot ADD COLUMN instantly here
        sent = statements_of(db.engine)
        migrations.upgrade(db.engine)
        assert_at_head(db.engine)
        adds = [s for s in sent if "ADD COLUMN attempt" in s]
        assert [a.rsplit(", ", 1)[-1] for a in adds] == ["ALGORITHM=INSTANT", "LOCK=NONE"], adds
        assert tasks(db.engine) == [(1, "demo-task-1", "Normal"), (2, "demo-task-2", "Normal")]


@pytest.mark.postgres
@pytest.mark.slow
def test_on_postgres_the_index_waits_for_the_users_open_transaction_and_never_blocks_its_writes(
        postgres_dsn: str) -> None:
    with ExitStack() as stack:
        db = _postgres(stack, postgres_dsn)
        release_0_1(db)  # adopted: only the index is left to build
        reader = stack.enter_context(db.engine.connect().execution_options(isolation_level="REPEATABLE READ"))
        reader.execute(sa.text("SELECT COUNT(*) FROM task"))  # a report's transaction left open on task
        errors: list[BaseException] = []
        builder = threading.Thread(target=lambda: _capture(errors, lambda: migrations.upgrade(db.make_engine())))
        builder.start()
        until = time.monotonic() + 11  # past the migration's 2 s lock_timeout
        while time.monotonic() < until:
            started = time.monotonic()
            db.run("SET lock_timeout = '1s'", "INSERT INTO task (name, namespace, info) VALUES"
                   f" ('form-{started}', 'default', '{{}}')")
            assert time.monotonic() - started < 0.5
            time.sleep(0.5)
        assert builder.is_alive() and not errors, errors  # still waiting for the reader, not failed
        reader.rollback()
        builder.join(30)
        assert errors == []
        assert_at_head(db.engine)


def _capture(errors: list[BaseException], work: Callable[[], None]) -> None:
    try:
        work()
    except BaseException as e:
        errors.append(e)


@pytest.mark.postgres
def test_an_interrupted_concurrent_index_build_is_rebuilt(postgres_dsn: str, tmp_path: Path) -> None:
    with ExitStack() as stack:
        db = _postgres(stack, postgres_dsn)
        seed(db)
        db.run("INSERT INTO task (name, namespace, info, status) VALUES ('again', 'default', '{}', 'Normal')")
        with pytest.raises(psycopg.errors.UniqueViolation):  # leaves an INVALID index of that name
            db.run("CREATE UNIQUE INDEX CONCURRENTLY idx_task_status_id ON task (status)")
        migrations.upgrade(db.engine)
        assert_at_head(db.engine)
        with db.engine.connect() as conn:
            valid = conn.execute(sa.text("SELECT i.indisvalid FROM pg_index i JOIN pg_class c"
                                         " ON c.oid = i.indexrelid WHERE c.relname = 'idx_task_status_id'"))
            assert valid.scalar() is True


# -- replicas ---------------------------------------------------------------------------------

def test_replicas_migrating_at_once_all_succeed(db: Database) -> None:
    seed(db)
    engines = [db.make_engine() for _ in range(4)]
    barrier, errors = threading.Barrier(4), []

    def replica(engine: sa.Engine) -> None:
        barrier.wait(timeout=10)
        try:
            migrations.upgrade(engine)
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=replica, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert_at_head(db.engine)


class HeldMigrationLock:
    """The migration lock, held by "another replica" (the test) until released."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.release: Callable[[], None]

    def __enter__(self) -> HeldMigrationLock:
        if self.db.kind == "sqlite":
            fd = open(self.db.engine.url.database + ".migrate.lock", "w")  # noqa: SIM115
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.release = fd.close
            return self
        conn = self.db.engine.connect()
        if self.db.kind == "mysql":
            name = f"nightwatch_migrate:{conn.execute(sa.text('SELECT DATABASE()')).scalar()}"
            assert conn.execute(sa.text("SELECT GET_LOCK(:n, 0)"), {"n": name}).scalar() == 1
        else:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": zlib.crc32(b"nightwatch_migrate")})
            conn.commit()
        self.release = conn.invalidate  # the session ends, and its lock with it
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def test_a_replica_waits_for_anothers_migration_and_shutdown_interrupts_the_wait(db: Database) -> None:
    stop = threading.Event()
    outcome: list[BaseException | None] = []

    def replica() -> None:
        try:
            migrations.upgrade(db.engine, stop=stop)
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    with HeldMigrationLock(db):
        waiter = threading.Thread(target=replica)
        waiter.start()
        waiter.join(2.0)
        assert waiter.is_alive() and migrations.current(db.engine) is None  # it waits: the lock is respected
        stopped = time.monotonic()
        stop.set()
        waiter.join(5.0)
        assert not waiter.is_alive()
        assert time.monotonic() - stopped < 1.5
    [error] = outcome
    assert isinstance(error, BackendUnavailableError) and "shutdown" in str(error)
    assert migrations.current(db.engine) is None  # it ran nothing


def test_a_replica_that_waited_migrates_once_the_lock_is_free(db: Database) -> None:
    outcome: list[BaseException | None] = []

    def replica() -> None:
        try:
            migrations.upgrade(db.engine)
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    with HeldMigrationLock(db):
        waiter = threading.Thread(target=replica)
        waiter.start()
        time.sleep(1.0)
        assert waiter.is_alive()
    waiter.join(30)
    assert outcome == [None]
    assert_at_head(db.engine)


# -- the --sql script -----------------------------------------------------------------------------

def dba_applies(db: Database, script: str) -> None:
    """The offline script as a DBA runs it: statement by statement, comments skipped."""
    lines = "\n".join(line for line in script.splitlines() if not line.startswith("--"))
    db.run(*[s.strip() for s in re.split(r";\s*\n", lines) if s.strip()])


@pytest.mark.parametrize("start", ["empty", "seed", "0.1"])
def test_the_sql_script_applied_by_hand_gives_the_schema_db_migrate_gives(db: Database, start: str) -> None:
    by_hand = db.new()
    for target in (db, by_hand):
        {"empty": lambda d: None, "seed": seed, "0.1": release_0_1}[start](target)
    if start == "0.1" and db.kind == "sqlite":
        pytest.skip("SQLite has no ADD COLUMN IF NOT EXISTS: its script is for a database without message")
    migrations.upgrade(db.engine)
    dba_applies(by_hand, migrations.offline_sql(db.kind))
    assert schema(by_hand.engine) == schema(db.engine)
    assert migrations.current(by_hand.engine) == migrations.head()


def test_the_sql_script_from_a_revision_holds_only_the_later_ones() -> None:
    script = migrations.offline_sql("postgresql", start="0003")
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_task_status_id" in script
    assert not re.search(r"CREATE TABLE IF NOT EXISTS nightwatch_leader\b", script)
    assert "ADD COLUMN IF NOT EXISTS message" not in script
    latest = migrations.offline_sql("postgresql", start="0004")
    assert "idx_task_status_id" not in latest and "version_num='0007'" in latest.replace(" ", "")
    assert "CREATE TABLE IF NOT EXISTS nightwatch_replica" in latest
    assert "CREATE TABLE IF NOT EXISTS task_event" in latest
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_task_namespace_id" in latest
    assert "ADD COLUMN IF NOT EXISTS attempt INTEGER NOT NULL DEFAULT 1" in latest


def test_a_0004_table_with_rows_upgrades_with_attempt_1_and_nothing_else_changed(db: Database) -> None:
    seed(db)
    with migrations._migration_connection(db.engine) as conn:
        command.upgrade(migrations._config(connection=conn), "0004")
        conn.commit()
    assert migrations.current(db.engine) == "0004"
    before_schema, before_rows = schema(db.engine), all_rows(db.engine)
    migrations.upgrade(db.engine)
    assert_at_head(db.engine)
    after_schema, after_rows = schema(db.engine), all_rows(db.engine)
    n = len(before_schema["task"]["columns"])
    assert after_schema["task"]["columns"][:n] == before_schema["task"]["columns"]
    assert {k: v for k, v in after_schema["task"].items() if k not in ("columns", "indexes")} == {
        k: v for k, v in before_schema["task"].items() if k not in ("columns", "indexes")}
    assert set(after_schema["task"]["indexes"]) - set(before_schema["task"]["indexes"]) == {
        ("idx_task_namespace_id", ("namespace", "id"), False)}
    assert [r[:n] for r in after_rows] == before_rows and len(after_rows) == 2  # the seed's two rows
    assert [r[n:] for r in after_rows] == [(1, None, None, None, None)] * 2
    assert after_schema["nightwatch_leader"] == before_schema["nightwatch_leader"]


def all_rows(engine: sa.Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text("SELECT * FROM task ORDER BY id"))]


# -- 0005's finished_at backfill ---------------------------------------------------------------

def at_0004(db: Database, **attributes: Any) -> None:
    """The seed's table as nightwatch 0.2 left it (revision 0004)."""
    seed(db)
    with migrations._migration_connection(db.engine) as conn:
        command.upgrade(migrations._config(connection=conn, **attributes), "0004")
        conn.commit()


FINISHED_BEFORE = [  # (id, name, status): rows 0.2 wrote before the upgrade, past the seed's ids 1 and 2
    (10, "done", "Succeeded"), (11, "broke", "Failed"), (12, "stopped", "Cancelled"), (13, "busy", "Running"),
    (14, "lookalike", "failed"), (15, "padded", "Failed "), (9000, "far", "Succeeded")]
UPDATED = "2024-05-06 07:08:09"


def finished_at(engine: sa.Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT name, finished_at, updated_at FROM task ORDER BY id")).all()
    return {name: (str(done)[:19] if done is not None else None, str(updated)[:19]) for name, done, updated in rows}


def insert_finished_before(db: Database) -> None:
    db.run(*[f"INSERT INTO task (id, name, namespace, info, status, user_id, updated_at) VALUES"
             f" ({i}, '{name}', 'default', '{{}}', '{status}', 1, '{UPDATED}')" for i, name, status in FINISHED_BEFORE])


def expected_backfill() -> dict[str, Any]:
    done = {"done", "broke", "stopped", "far"}  # byte for byte: not 'failed' nor 'Failed '
    return {"demo-task-1": None, "demo-task-2": None} | {
        name: UPDATED if name in done else None for _, name, _ in FINISHED_BEFORE}


def test_rows_finished_before_0005_get_finished_at_in_short_batches_and_the_others_do_not(db: Database) -> None:
    at_0004(db)
    insert_finished_before(db)
    with migrations._migration_connection(db.engine) as conn:
        seen: list[tuple[str, Any]] = []
        sa.event.listen(conn, "before_cursor_execute", lambda c, cursor, statement, *rest: seen.append(
            (statement, c.get_execution_options().get("isolation_level"))))
        command.upgrade(migrations._config(connection=conn, backfill_batch=2), "head")
        conn.commit()
    assert_at_head(db.engine)
    got = finished_at(db.engine)
    assert {name: done for name, (done, _) in got.items()} == expected_backfill()
    assert {updated for name, (_, updated) in got.items() if name not in ("demo-task-1", "demo-task-2")} == {
        UPDATED}  # MariaDB/MySQL's ON UPDATE CURRENT_TIMESTAMP did not move updated_at
    updates = [(s, level) for s, level in seen if s.lstrip().upper().startswith("UPDATE TASK SET FINISHED_AT")]
    # 9 rows, 2 ids per statement: 5 statements, each committing on its own
    assert len(updates) == 5 and all(level == "AUTOCOMMIT" for _, level in updates), updates
    assert all("id >" in s or "id <=" in s for s, _ in updates)


def test_the_backfill_at_its_real_batch_size_and_again_after_an_interruption(db: Database) -> None:
    at_0004(db)
    insert_finished_before(db)
    migrations.upgrade(db.engine)
    assert {name: done for name, (done, _) in finished_at(db.engine).items()} == expected_backfill()
    keep = ", updated_at = updated_at" if db.kind == "mysql" else ""  # not moved by ON UPDATE
    db.run(f"UPDATE task SET finished_at = NULL{keep} WHERE name = 'far'",  # as if cut short before its batch
           "UPDATE nightwatch_alembic_version SET version_num = '0004'")
    migrations.upgrade(db.engine)  # 0005 again: every part it finds done is left alone
    assert {name: done for name, (done, _) in finished_at(db.engine).items()} == expected_backfill()


def test_the_sql_script_backfills_finished_at_with_one_update(db: Database) -> None:
    at_0004(db)
    insert_finished_before(db)
    script = migrations.offline_sql(db.kind, start="0004")
    assert len(re.findall(r"UPDATE task SET finished_at", script)) == 1
    if db.kind == "sqlite":
        pytest.skip("SQLite has no ADD COLUMN IF NOT EXISTS: not for a table that has the columns (see above)")
    dba_applies(db, script)
    assert {name: done for name, (done, _) in finished_at(db.engine).items()} == expected_backfill()


def test_the_users_reset_of_a_row_finished_before_0005_is_a_new_attempt_not_the_old_job(db: Database) -> None:
    from nightwatch.adapters.clock import FakeClock
    from nightwatch.adapters.jobs.fake import FakeJobGateway
    from nightwatch.adapters.store.sql import SQLTaskStore
    from nightwatch.app.task_watcher import TaskWatcher
    from nightwatch.domain.jobspec import parse_info
    from nightwatch.domain.model import Task, job_name
    from nightwatch.domain.ports import RunContext

    at_0004(db)
    info = '{"image": "alpine", "command": ["sleep"], "args": ["1"]}'
    db.run(f"INSERT INTO task (id, name, namespace, info, status, user_id) VALUES (10, 'nightly', 'default',"
           f" '{info}', 'Succeeded', 1)")
    clock = FakeClock()
    store = SQLTaskStore(db.engine, clock, "test")
    gateway = FakeJobGateway(clock)
    old = Task(10, "nightly", "default", info, "Succeeded", 1)  # the store cannot read a 0004 row
    gateway.launch(old, parse_info(info))  # the Job 0.2 ran for it (attempt 1), still in the cluster
    clock.advance(5)
    migrations.upgrade(db.engine)
    db.run("UPDATE task SET status = 'Normal' WHERE id = 10")  # the user's own reset
    watcher = TaskWatcher(store, gateway, clock, allowed_namespaces=["default"])
    for _ in range(10):
        watcher.run(RunContext(None))
        clock.advance(1)
    got = store.get(10)
    assert (got.status, got.attempt) == ("Succeeded", 2)
    assert [name for _, name, i in gateway.created if i == 10] == ["nightly", job_name("nightly", 2)]  # not adopted
