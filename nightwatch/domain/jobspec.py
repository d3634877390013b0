"""JobSpec: what a task's ``info`` asks to run, parsed and validated."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from nightwatch.domain.errors import InvalidTaskSpecError

MAX_INFO_BYTES = 64 * 1024
MAX_NAME_LENGTH = 63
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_RESOURCE_KINDS = ("limits", "requests")


@dataclass(frozen=True)
class JobSpec:
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def argv(self) -> list[str]:
        return [*self.command, *self.args]


@dataclass(frozen=True)
class JobDefaults:
    """``jobs.defaults`` of the config: what every Job gets unless the spec says otherwise."""

    backoff_limit: int = 0
    ttl_seconds_after_finished: int | None = 3600
    active_deadline_seconds: int | None = None


def validate_job_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidTaskSpecError("task name is empty; a Job name must be a DNS-1123 label")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidTaskSpecError(
            f"task name {name[:20]!r}... is {len(name)} characters; a Job name must be a "
            f"DNS-1123 label of at most {MAX_NAME_LENGTH} characters"
        )
    if not _DNS1123_LABEL.match(name):
        raise InvalidTaskSpecError(
            f"task name {name!r} is not a DNS-1123 label (lower-case letters, digits and '-', "
            "starting and ending with a letter or digit)"
        )


def check_allowed(
    namespace: str, image: str, allowed_namespaces: Collection[str], allowed_images: Collection[str]
) -> None:
    if namespace not in allowed_namespaces:
        allowed = ", ".join(sorted(allowed_namespaces)) or "none"
        raise InvalidTaskSpecError(
            f"namespace {namespace!r} is not allowed (jobs.allowed_namespaces: {allowed})"
        )
    if allowed_images and image not in allowed_images:
        raise InvalidTaskSpecError(
            f"image {image!r} is not allowed (jobs.allowed_images: {', '.join(sorted(allowed_images))})"
        )


def parse_info(info: str | bytes | None) -> JobSpec:
    """Parse a task's ``info`` column. Raises InvalidTaskSpecError naming the problem."""
    if info is None:
        raise InvalidTaskSpecError("info is empty; expected a JSON object with an 'image'")
    raw = info.encode() if isinstance(info, str) else info
    if len(raw) > MAX_INFO_BYTES:
        raise InvalidTaskSpecError(
            f"info is {len(raw)} bytes; at most {MAX_INFO_BYTES} bytes (64 KiB) are accepted"
        )
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidTaskSpecError(f"info is not valid JSON: {e}") from None
    except RecursionError:
        raise InvalidTaskSpecError("info is nested too deeply to be a job spec") from None
    if not isinstance(doc, dict):
        raise InvalidTaskSpecError(f"info must be a JSON object, got {type(doc).__name__}")
    image = doc.get("image")
    if not isinstance(image, str) or not image.strip():
        raise InvalidTaskSpecError("info.image is missing or empty; it must be a non-empty string")
    return JobSpec(
        image=image.strip(),
        command=_string_list(doc, "command"),
        args=_string_list(doc, "args"),
        env=_env(doc.get("env")),
        resources=_resources(doc.get("resources")),
    )


def _string_list(doc: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = doc.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidTaskSpecError(f"info.{key} must be a list of strings, got {json.dumps(value)[:80]}")
    return tuple(value)


def _env(value: Any) -> dict[str, str]:
    """``env`` as an object ``{"NAME": "value"}`` or a list ``[{"name": .., "value": ..}]``."""
    if value is None:
        return {}
    if isinstance(value, list):
        pairs = []
        for item in value:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise InvalidTaskSpecError("info.env entries must be objects with a 'name' and a 'value'")
            pairs.append((item["name"], item.get("value", "")))
        value = dict(pairs)
    if not isinstance(value, dict):
        raise InvalidTaskSpecError("info.env must be an object of strings or a list of {name, value}")
    env: dict[str, str] = {}
    for name, val in value.items():
        if not _ENV_NAME.match(name):
            raise InvalidTaskSpecError(f"info.env name {name!r} is not a valid environment variable name")
        if not isinstance(val, str):
            raise InvalidTaskSpecError(f"info.env value of {name!r} must be a string")
        env[name] = val
    return env


def _resources(value: Any) -> dict[str, dict[str, str]]:
    if value is None:
        return {}
    if not isinstance(value, dict) or set(value) - set(_RESOURCE_KINDS):
        raise InvalidTaskSpecError("info.resources may only hold 'limits' and 'requests'")
    out: dict[str, dict[str, str]] = {}
    for kind, amounts in value.items():
        if not isinstance(amounts, dict) or not all(
            isinstance(k, str) and isinstance(v, str | int) and not isinstance(v, bool)
            for k, v in amounts.items()
        ):
            raise InvalidTaskSpecError(
                f"info.resources.{kind} must map resource names to quantities like \"500m\" or \"1Gi\""
            )
        out[kind] = {k: str(v) for k, v in amounts.items()}
    return out


def spec_for(
    name: str,
    namespace: str,
    info: str,
    allowed_namespaces: Collection[str],
    allowed_images: Collection[str] = (),
) -> JobSpec:
    """Everything checked before any backend call: the name, ``info``, the allow-lists."""
    validate_job_name(name)
    spec = parse_info(info)
    check_allowed(namespace, spec.image, allowed_namespaces, allowed_images)
    return spec
