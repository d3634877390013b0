"""server.auth and server.max_body: defaults, the environment, one-line errors, masking;
and the OpenAPI document covers every route of the API."""

import pytest
import yaml

from nightwatch.app import api
from nightwatch.app.api_docs import openapi_document
from nightwatch.app.auth import AuthSettings
from nightwatch.app.config import load_config, masked
from nightwatch.domain.errors import ConfigError

TOKEN = "a" * 32


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def test_by_default_writes_are_off_reads_open_and_bodies_limited_to_64_kib(monkeypatch):
    monkeypatch.delenv("NIGHTWATCH_API_TOKEN", raising=False)
    monkeypatch.delenv("NIGHTWATCH_SESSION_SECRET", raising=False)
    settings = AuthSettings.from_config(load_config()["server"])
    assert settings == AuthSettings(tokens=(), read=False, session_secret=None, secure_cookies=False,
                                    max_body=65536)


def test_the_token_and_session_secret_come_from_the_environment_and_are_masked(monkeypatch):
    monkeypatch.setenv("NIGHTWATCH_API_TOKEN", TOKEN)
    monkeypatch.setenv("NIGHTWATCH_SESSION_SECRET", "s" * 40)
    config = load_config()
    assert config["server"]["auth"]["tokens"] == [TOKEN]
    assert config["server"]["auth"]["session_secret"] == "s" * 40
    shown = yaml.safe_dump(masked(config))
    assert TOKEN not in shown and "s" * 40 not in shown


@pytest.mark.parametrize("text, message", [
    ("server: {auth: {tokens: [short]}}", "server.auth.tokens[0]: a token must be at least 16 characters"),
    ("server: {auth: {tokens: ['has a space in it, long']}}", "server.auth.tokens[0]"),
    ("server: {auth: {tokens: {a: b}}}", "server.auth.tokens: expected a list of tokens"),
    ("server: {auth: {tokens: [], read: true}}", "server.auth.read: true needs a token"),
    ("server: {auth: {read: 'yes'}}", "server.auth.read: expected true or false"),
    ("server: {auth: {secure_cookies: 1}}", "server.auth.secure_cookies: expected true or false"),
    ("server: {auth: {session_secret: tooshort}}", "server.auth.session_secret: expected a string of at least 32"),
    ("server: {auth: {colour: red}}", "server.auth.colour: unknown key"),
    ("server: {max_body: 10}", "server.max_body: expected a whole number from 1024"),
])
def test_a_wrong_auth_value_is_one_line_naming_the_key(tmp_path, monkeypatch, text, message):
    monkeypatch.delenv("NIGHTWATCH_API_TOKEN", raising=False)
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_refused_token_is_not_echoed(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "server: {auth: {tokens: [hunter2-secret]}}"))
    assert "hunter2" not in str(e.value)


def test_empty_tokens_from_unset_variables_are_left_out(tmp_path, monkeypatch):
    monkeypatch.delenv("NIGHTWATCH_API_TOKEN", raising=False)
    config = load_config(write(tmp_path, f"server: {{auth: {{tokens: ['${{NIGHTWATCH_API_TOKEN:}}', '{TOKEN}']}}}}"))
    assert config["server"]["auth"]["tokens"] == [TOKEN]


class _Ctx:
    store = gateway = daemon = replicas = None
    version = "0"


def test_the_openapi_document_covers_every_route_and_method():
    documented = {(path, method.upper()) for path, item in openapi_document("0")["paths"].items() for method in item}
    served = {(route.path.replace("{task_id}", "{id}"), method)
              for route in api.routes(_Ctx()) for method in (route.methods or ()) if method != "HEAD"}
    assert served == documented
