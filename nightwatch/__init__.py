"""nightwatch: keeps a relational ``task`` table and a cluster's Jobs in step."""

__version__ = "0.1.0"
