"""Every bad input names its problem (the cycle test shows it fails only its own task)."""

import json

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
