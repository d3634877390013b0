"""Use cases and runtime: task watcher, registry, scheduler, elector, daemon, container, CLI."""
