"""Every bad input names its problem (the cycle test shows it fails only its own task)."""

import json
import re

import pytest

from nightwatch.domain.errors import InvalidTaskSpecError
from nightwatch.domain.jobspec import parse_info, spec_for, validate_job_name

SEED_1 = '{"image":"alpine","command":["sleep"],"args":["60"]}'


def test_seed_row_parses():
    spec = parse_info(SEED_1)
    assert (spec.image, spec.command, spec.args) == ("alpine", ("sleep",), ("60",))
    assert spec.argv == ["sleep", "60"]


def test_env_and_resources():
    spec = parse_info(json.dumps({"image": "a", "env": {"A": "1"},
                                  "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}}}))
    assert spec.env == {"A": "1"} and spec.resources == {"limits": {"cpu": "500m", "memory": "1Gi"}}
    assert parse_info(json.dumps({"image": "a", "env": [{"name": "B", "value": "2"}]})).env == {"B": "2"}


@pytest.mark.parametrize(("info", "message"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object, got list"),
    ('"alpine"', "must be a JSON object, got str"),
    ('{"command": ["true"]}', "image is missing or empty"),
    ('{"image": ""}', "image is missing or empty"),
    ('{"image": "   "}', "image is missing or empty"),
    ('{"image": 7}', "image is missing or empty"),
    ('{"image": "a", "command": "sleep 60"}', "info.command must be a list of strings"),
    ('{"image": "a", "args": [60]}', "info.args must be a list of strings"),
    ('{"image": "a", "env": {"A": 1}}', "must be a string"),
    ('{"image": "a", "env": {"1 bad": "x"}}', "not a valid environment variable name"),
    ('{"image": "a", "resources": {"limits": {"cpu": true}}}', "resources.limits"),
    (json.dumps({"image": "a", "args": ["x" * (64 * 1024)]}), "at most 65536 bytes"),
    (None, "info is empty"),
    ("[" * 30000 + "]" * 30000, "nested too deeply"),
])
def test_bad_info_names_the_problem(info, message):
    with pytest.raises(InvalidTaskSpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_info(info)


@pytest.mark.parametrize(("name", "message"), [
    ("Demo", "not a DNS-1123 label"),
    ("demo_task", "not a DNS-1123 label"),
    ("-demo", "not a DNS-1123 label"),
    ("demo-", "not a DNS-1123 label"),
    ("a" * 64, "at most 63 characters"),
    ("", "empty"),
])
def test_bad_names(name, message):
    with pytest.raises(InvalidTaskSpecError, match=message):
        validate_job_name(name)


def test_longest_legal_name():
    validate_job_name("a" * 63)


def test_allow_lists():
    with pytest.raises(InvalidTaskSpecError,
                       match=r"namespace 'demo' is not allowed \(jobs.allowed_namespaces: default\)"):
        spec_for("demo-task-2", "demo", SEED_1, ["default"])
    with pytest.raises(InvalidTaskSpecError, match="image 'alpine' is not allowed"):
        spec_for("t", "default", SEED_1, ["default"], ["busybox"])
    assert spec_for("t", "default", SEED_1, ["default"], ["alpine"]).image == "alpine"
    assert spec_for("t", "default", SEED_1, ["default"], []).image == "alpine"  # empty = any


# -- text the OS cannot take ----------------------------------------------------------------


@pytest.mark.parametrize(("doc", "message"), [
    ({"image": "a", "command": ["echo", "a\u0000b"]}, "info.command[1] contains a NUL byte"),
    ({"image": "a", "args": ["\u0000"]}, "info.args[0] contains a NUL byte"),
    ({"image": "al\u0000pine"}, "info.image contains a NUL byte"),
    ({"image": "a", "env": {"A": "x\u0000"}}, "info.env value of 'A' contains a NUL byte"),
    ({"image": "a", "env": [{"name": "A", "value": "\u0000"}]}, "info.env value of 'A' contains a NUL byte"),
    ({"image": "a", "env": {"A\u0000": "x"}}, "not a valid environment variable name"),
    ({"image": "a", "command": ["echo", "\ud800"]}, "info.command[1] is not valid Unicode"),
    ({"image": "a", "resources": {"limits": {"cpu\u0000": "1"}}}, "is not a resource name"),
])
def test_a_nul_byte_or_a_lone_surrogate_anywhere_is_refused(doc, message):
    with pytest.raises(InvalidTaskSpecError, match=re.escape(message)):
        parse_info(json.dumps(doc))


# -- resources: Kubernetes quantities ---------------------------------------------------------


@pytest.mark.parametrize("value", [
    "500m", "1Gi", 2, "1.5", 1.5, "0", 0, "1", "+1", "1.", ".5", "100Ki", "2Ei", "1k", "3M", "1E", "1e3", "1E3",
    "1e-3", "12e+6", "-0", "0.000000001", 10**18, "1m",
])
def test_valid_quantities_pass_unchanged(value):
    spec = parse_info(json.dumps({"image": "a", "resources": {"limits": {"cpu": value}, "requests": {"cpu": value}}}))
    assert spec.resources == {"limits": {"cpu": value}, "requests": {"cpu": value}}
    assert type(spec.resources["limits"]["cpu"]) is type(value)


@pytest.mark.parametrize("value", [
    "lots", "", " 1", "1 ", "1Gb", "1g", "1ki", "1.2.3", "e3", "1e", "1e1.5", "--1", "1Ki1", "0x10", ".", "+",
    "1_000", "١", "Infinity", "NaN",
])
def test_malformed_quantities_are_refused(value):
    with pytest.raises(InvalidTaskSpecError, match=re.escape("info.resources.limits.memory: ")
                       + ".*is not a Kubernetes quantity"):
        parse_info(json.dumps({"image": "a", "resources": {"limits": {"memory": value}}}))


@pytest.mark.parametrize("value", [-1, "-1", "-500m", "-1Gi", -0.5, "-1e3"])
def test_negative_quantities_are_refused(value):
    with pytest.raises(InvalidTaskSpecError, match=r"info.resources.requests.cpu: .* must not be negative"):
        parse_info(json.dumps({"image": "a", "resources": {"requests": {"cpu": value}}}))


@pytest.mark.parametrize("info", [
    '{"image": "a", "resources": {"limits": {"cpu": true}}}',
    '{"image": "a", "resources": {"limits": {"cpu": null}}}',
    '{"image": "a", "resources": {"limits": {"cpu": ["1"]}}}',
    '{"image": "a", "resources": {"limits": {"cpu": {"v": 1}}}}',
    '{"image": "a", "resources": {"limits": {"cpu": NaN}}}',
    '{"image": "a", "resources": {"limits": {"cpu": Infinity}}}',
    '{"image": "a", "resources": {"limits": {"cpu": -Infinity}}}',
    '{"image": "a", "resources": {"limits": {"cpu": 1e400}}}',
])
def test_a_quantity_that_is_neither_a_string_nor_a_finite_number_is_refused(info):
    with pytest.raises(InvalidTaskSpecError, match=r"info.resources.limits.cpu: .*(quantity|finite)"):
        parse_info(info)


@pytest.mark.parametrize("name", ["memory", "ephemeral-storage", "hugepages-2Mi", "nvidia.com/gpu",
                                  "example.com/foo_bar", "kubernetes.io/native"])
def test_resource_names_the_api_server_takes(name):
    value = "2" if "/" in name else "1Gi"
    parse_info(json.dumps({"image": "a", "resources": {"limits": {name: value}, "requests": {name: value}}}))


@pytest.mark.parametrize("name", ["gpu", "CPU", "", "a/b/c", "nvidia.com/", "/gpu", "requests.example.com/x",
                                  "hugepages-lots", "-x.com/gpu"])
def test_unknown_resource_names_are_refused(name):
    with pytest.raises(InvalidTaskSpecError, match="is not a resource name"):
        parse_info(json.dumps({"image": "a", "resources": {"limits": {name: "1"}}}))


@pytest.mark.parametrize(("resources", "message"), [
    ({"requests": {"cpu": "2"}, "limits": {"cpu": "1"}},
     "info.resources.requests.cpu: '2' must be less than or equal to the cpu limit of '1'"),
    ({"requests": {"memory": "1025Mi"}, "limits": {"memory": "1Gi"}}, "must be less than or equal to"),
    ({"requests": {"cpu": "1001m"}, "limits": {"cpu": 1}}, "must be less than or equal to"),
    ({"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 2}},
     "info.resources.requests.nvidia.com/gpu: 1 must be equal to the nvidia.com/gpu limit of 2"),
    ({"requests": {"nvidia.com/gpu": 1}}, "info.resources.limits.nvidia.com/gpu: must be set"),
    ({"limits": {"nvidia.com/gpu": "1.5"}}, "info.resources.limits.nvidia.com/gpu: '1.5' must be a whole number"),
    ({"limits": {"nvidia.com/gpu": "500m"}}, "must be a whole number"),
])
def test_requests_and_limits_are_checked_as_the_api_server_does(resources, message):
    with pytest.raises(InvalidTaskSpecError, match=re.escape(message)):
        parse_info(json.dumps({"image": "a", "resources": resources}))


@pytest.mark.parametrize("resources", [
    {"requests": {"cpu": "500m"}, "limits": {"cpu": "1"}},
    {"requests": {"cpu": "1000m"}, "limits": {"cpu": 1}},
    {"requests": {"memory": "1Gi"}, "limits": {"memory": "1024Mi"}},
    {"requests": {"memory": "1G"}, "limits": {"memory": "1Gi"}},
    {"requests": {"cpu": "1"}},
    {"requests": {"nvidia.com/gpu": 2}, "limits": {"nvidia.com/gpu": "2"}},
    {"limits": {"nvidia.com/gpu": "2e0"}},
])
def test_requests_within_limits_pass(resources):
    assert parse_info(json.dumps({"image": "a", "resources": resources})).resources == resources
