"""JobSpec: what a task's ``info`` asks to run, parsed and validated."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from nightwatch.domain.errors import InvalidTaskSpecError
from nightwatch.domain.quantity import QuantityError, parse_quantity, quantity_text

MAX_INFO_BYTES = 64 * 1024
MAX_NAME_LENGTH = 63
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_RESOURCE_KINDS = ("limits", "requests")
# Resource names a container may ask for, as the API server validates them: the standard
# ones, hugepages-<size>, and domain-prefixed names (extended resources such as nvidia.com/gpu).
_STANDARD_RESOURCES = frozenset({"cpu", "memory", "ephemeral-storage"})
_HUGEPAGES = "hugepages-"
_OVERCOMMIT, _EXTENDED = "overcommit", "extended"
_NATIVE_PREFIX = "kubernetes.io/"
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_RESOURCE_NAMES = ("cpu, memory, ephemeral-storage, hugepages-<size>, or a domain-prefixed extended "
                   "resource such as example.com/gpu")
_QUANTITY_EXAMPLES = '(like "500m", "1Gi", 2 or "1.5")'
MAX_RETRIES = 100

Quantity = str | int | float  # as written in ``info``: a JSON string or number


@dataclass(frozen=True)
class JobSpec:
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    resources: Mapping[str, Mapping[str, Quantity]] = field(default_factory=dict)
    retries: int | None = None  # automatic retries of a failed Job; None = jobs.defaults.retries

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
    _check_text("info.image", image)
    return JobSpec(
        image=image.strip(),
        command=_string_list(doc, "command"),
        args=_string_list(doc, "args"),
        env=_env(doc.get("env")),
        resources=_resources(doc.get("resources")),
        retries=_retries(doc.get("retries")),
    )


def _retries(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RETRIES:
        raise InvalidTaskSpecError(
            f"info.retries must be a whole number from 0 to {MAX_RETRIES}, got {json.dumps(value)[:40]}"
        )
    return value


def _string_list(doc: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = doc.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidTaskSpecError(f"info.{key} must be a list of strings, got {json.dumps(value)[:80]}")
    for i, item in enumerate(value):
        _check_text(f"info.{key}[{i}]", item)
    return tuple(value)


def _check_text(where: str, text: str) -> None:
    """Refuse what no process can be given: a NUL byte ends a C string (the exec call and the
    container runtime refuse it), and a lone surrogate cannot be encoded at all."""
    if "\x00" in text:
        raise InvalidTaskSpecError(f"{where} contains a NUL byte")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidTaskSpecError(f"{where} is not valid Unicode (a lone surrogate)") from None


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
        _check_text(f"info.env value of {name!r}", val)
        env[name] = val
    return env


def _resources(value: Any) -> dict[str, dict[str, Quantity]]:
    """``limits`` and ``requests``: resource names to quantities, checked as the API server
    checks a container's resources (what needs no cluster state), so a spec that Kubernetes
    would refuse fails the same way on every backend. Values are kept as written."""
    if value is None:
        return {}
    if not isinstance(value, dict) or set(value) - set(_RESOURCE_KINDS):
        raise InvalidTaskSpecError("info.resources may only hold 'limits' and 'requests'")
    out: dict[str, dict[str, Quantity]] = {}
    amounts: dict[str, dict[str, Decimal]] = {}
    for kind in _RESOURCE_KINDS:
        given = value.get(kind)
        if given is None:
            continue
        if not isinstance(given, dict):
            raise InvalidTaskSpecError(
                f"info.resources.{kind} must map resource names to quantities {_QUANTITY_EXAMPLES}"
            )
        out[kind], amounts[kind] = {}, {}
        for name, quantity in given.items():
            amounts[kind][name] = _amount(f"info.resources.{kind}", name, quantity)
            out[kind][name] = quantity
    _check_requests(out, amounts.get("requests", {}), amounts.get("limits", {}))
    return out


def _show(quantity: Any) -> str:
    return repr(quantity) if isinstance(quantity, str) else json.dumps(quantity)[:40]


def _amount(where: str, name: str, quantity: Any) -> Decimal:
    kind = _resource_class(where, name)
    try:
        text = quantity_text(quantity)
    except QuantityError as e:  # a bool, null, list, object, NaN or infinity
        raise InvalidTaskSpecError(
            f"{where}.{name}: {_show(quantity)} is not a Kubernetes quantity {_QUANTITY_EXAMPLES}: {e}"
        ) from None
    try:
        amount = parse_quantity(text)
    except QuantityError:
        raise InvalidTaskSpecError(
            f"{where}.{name}: {_show(quantity)} is not a Kubernetes quantity {_QUANTITY_EXAMPLES}"
        ) from None
    if amount < 0:
        raise InvalidTaskSpecError(f"{where}.{name}: {_show(quantity)} must not be negative")
    if kind == _EXTENDED and amount != amount.to_integral_value():
        raise InvalidTaskSpecError(
            f"{where}.{name}: {_show(quantity)} must be a whole number (an extended resource)"
        )
    return amount


def _resource_class(where: str, name: str) -> str:
    """``_OVERCOMMIT`` (requests <= limits), ``_HUGEPAGES`` (requests == limits) or
    ``_EXTENDED`` (whole numbers, requests == limits), as the API server classes the name."""
    if name in _STANDARD_RESOURCES:
        return _OVERCOMMIT
    if name.startswith(_HUGEPAGES):
        with contextlib.suppress(QuantityError):
            parse_quantity(name[len(_HUGEPAGES):])
            return _HUGEPAGES
    elif "/" in name and not name.startswith("requests."):
        prefix, _, rest = name.partition("/")
        if (_DNS1123_SUBDOMAIN.match(prefix) and len(prefix) <= 253 and _QUALIFIED_NAME.match(rest)
                and len(rest) <= 63):
            return _OVERCOMMIT if _NATIVE_PREFIX in name else _EXTENDED
    raise InvalidTaskSpecError(f"{where}: {name!r} is not a resource name ({_RESOURCE_NAMES})")


def _check_requests(given: Mapping[str, Mapping[str, Quantity]], requests: Mapping[str, Decimal],
                    limits: Mapping[str, Decimal]) -> None:
    for name, request in requests.items():
        shown = _show(given["requests"][name])
        exact = _resource_class("info.resources.requests", name) != _OVERCOMMIT
        if name not in limits:
            if exact:
                raise InvalidTaskSpecError(
                    f"info.resources.limits.{name}: must be set for a resource that cannot be "
                    f"overcommitted (info.resources.requests.{name} is {shown})"
                )
            continue
        limit = _show(given["limits"][name])
        if exact and request != limits[name]:
            raise InvalidTaskSpecError(
                f"info.resources.requests.{name}: {shown} must be equal to the {name} limit of {limit}"
            )
        if request > limits[name]:
            raise InvalidTaskSpecError(
                f"info.resources.requests.{name}: {shown} must be less than or equal to the {name} "
                f"limit of {limit}"
            )


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
