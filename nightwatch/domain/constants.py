"""Names shared with the world outside: labels, Redis keys, table names."""

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "nightwatch"
TASK_ID_LABEL = "nightwatch.io/task-id"
ATTEMPT_LABEL = "nightwatch.io/attempt"  # absent on Jobs made before attempts existed: read as attempt 1
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
DONE_LABEL = "nightwatch.io/done"  # set on a Job once its task is terminal: it leaves the working set
WORKING_SELECTOR = f"{MANAGED_SELECTOR},!{DONE_LABEL}"  # nightwatch's Jobs not retired yet
CONTAINER_NAME = "task"

TASK_TABLE = "task"
LEADER_TABLE = "nightwatch_leader"
EVENT_TABLE = "task_event"
SCHEMA_TABLE = "nightwatch_schema"


def redis_lock_key(prefix: str, name: str) -> str:
    return f"{prefix}lock:{name}"


def redis_wake_key(prefix: str, name: str) -> str:
    """A list a releasing holder pushes to, so standbys blocked in BLPOP wake at once."""
    return f"{prefix}lock:{name}:released"


REDIS_KEY_PREFIX = "nightwatch:"
