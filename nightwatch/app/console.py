"""The web console's routes (the console engineer's module; a placeholder until it is merged)."""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute


def routes(ctx: Any) -> list[BaseRoute]:
    return []
