"""``python tests/unfenced_nightwatch.py run ...``: the nightwatch CLI with an unfenced store.

Only the multi-process positive control runs this: the container's store is replaced by
``UnfencedStore`` around the configured one, so the test can show the stale writes that
fencing prevents. Production nightwatch has no way to turn fencing off.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from dependency_injector import providers  # noqa: E402
from unfenced import UnfencedStore  # noqa: E402

import nightwatch.app.container as wiring  # noqa: E402
from nightwatch.app.cli import main  # noqa: E402

_build = wiring.build_container


def _unfenced_container(config: dict[str, Any]) -> Any:
    container = _build(config)
    container.store.override(providers.Object(UnfencedStore(container.store())))
    return container


wiring.build_container = _unfenced_container  # type: ignore[assignment]

if __name__ == "__main__":
    sys.exit(main())
