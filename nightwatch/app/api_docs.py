"""The OpenAPI 3.1 document served at ``/api/v1/openapi.json``.

Written by hand: Starlette has no model layer to generate schemas from (its SchemaGenerator
only collects YAML written in each endpoint's docstring, which is the same document split
up), and FastAPI would replace the framework for one page. A unit test checks that every
route of ``api.routes`` is documented here with its methods, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

_ERR = {"$ref": "#/components/responses/Error"}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}


def _ok(description: str, schema: dict[str, Any], *errors: int, code: str = "200") -> dict[str, Any]:
    responses: dict[str, Any] = {code: {"description": description,
                                        "content": {"application/json": {"schema": schema}}}}
    responses.update({str(e): _ERR for e in errors})
    return responses


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_TASK = {"type": "object", "properties": {
    "id": {"type": "integer"}, "name": {"type": "string"}, "namespace": {"type": "string"},
    "status": {"type": "string", "description": "Normal, Pending, Running, Succeeded, Failed, Cancelled "
                                                "(or whatever the user's system wrote)"},
    "user_id": {"type": "integer"}, "message": {"type": ["string", "null"]}, "attempt": {"type": "integer"},
    "job_name": {"type": "string"}, "info": {"type": "string", "description": "the row's info, as stored"},
    "spec": {"type": ["object", "null"], "description": "info parsed, when it is a JSON object"},
    **{k: {"type": ["string", "null"], "format": "date-time"}
       for k in ("created_at", "updated_at", "finished_at", "retry_at", "cancel_requested_at")},
    "cancel_reason": {"type": ["string", "null"]}}}
_EVENT = {"type": "object", "properties": {
    "id": {"type": "integer"}, "attempt": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
    "from": {"type": "string"}, "to": {"type": "string"}, "message": {"type": ["string", "null"]},
    "epoch": {"type": ["integer", "null"]}, "replica": {"type": "string"},
    "duration": {"type": ["number", "null"], "description": "seconds in 'to' (until the next event, or now)"}}}
_ATTEMPT = {"type": "object", "properties": {
    "attempt": {"type": "integer"}, "status": {"type": ["string", "null"]}, "message": {"type": ["string", "null"]},
    "started_at": {"type": ["string", "null"]}, "finished_at": {"type": ["string", "null"]},
    "duration": {"type": ["number", "null"]}}}
_SUBMIT = {"type": "object", "required": ["name", "namespace", "image"], "additionalProperties": False,
           "properties": {"name": {"type": "string", "description": "a DNS-1123 label (the Job's name)"},
                          "namespace": {"type": "string", "description": "one of jobs.allowed_namespaces"},
                          "image": {"type": "string", "description": "allowed by jobs.allowed_images"},
                          "command": {"type": "array", "items": {"type": "string"}},
                          "args": {"type": "array", "items": {"type": "string"}},
                          "env": {"type": "object", "additionalProperties": {"type": "string"}},
                          "user_id": {"type": "integer", "default": 0}}}
_LIST = {"type": "object", "properties": {
    "tasks": {"type": "array", "items": _ref("Task")},
    "next_cursor": {"type": ["string", "null"], "description": "pass as ?cursor= for the next (older) page"},
    "total": {"type": "integer", "description": "tasks matching the filters"},
    "counts": {"type": "object", "additionalProperties": {"type": "integer"},
               "description": "tasks per status, whole table"}}}
_CLUSTER = {"type": "object", "properties": {
    "leader": {"type": ["string", "null"]}, "epoch": {"type": "integer"}, "served_by": {"type": "string"},
    "replicas": {"type": "array", "items": {"type": "object"}},
    "leader_changes": {"type": "array", "items": {"type": "object"}},
    "counts": {"type": "object", "additionalProperties": {"type": "integer"}}}}


def openapi_document(version: str) -> dict[str, Any]:
    write: list[dict[str, list[str]]] = [{"bearer": []}, {"session": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "nightwatch", "version": version,
                 "description": "Tasks and the cluster of nightwatch replicas. Writes need a bearer token "
                                "(server.auth.tokens); reads too when server.auth.read is true."},
        "servers": [{"url": "/api/v1"}],
        "paths": {
            "/tasks": {
                "get": {"summary": "List tasks, newest first", "parameters": [
                    _q("status", {"type": "string"}, "repeat, or comma-separated"),
                    _q("namespace", {"type": "string"}, "exact"), _q("name", {"type": "string"}, "exact"),
                    _q("user_id", {"type": "integer"}, "exact"),
                    _q("since", {"type": "string", "format": "date-time"}, "created at or after"),
                    _q("cursor", {"type": "string"}, "next_cursor of the previous page"),
                    _q("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}, "page size")],
                    "responses": _ok("a page of tasks", _LIST, 400, 401, 503)},
                "post": {"summary": "Submit a task (status Normal; the leader launches it)", "security": write,
                         "requestBody": {"required": True, "content": {"application/json": {"schema": _SUBMIT}}},
                         "responses": _ok("the task", _ref("Task"), 400, 401, 403, 409, 413, 422, 503,
                                          code="201")}},
            "/tasks/{id}": {"get": {"summary": "A task with its events and attempts", "parameters": [_ID],
                                    "responses": _ok("the task", {"allOf": [_ref("Task"), {"type": "object",
                                                     "properties": {"events": {"type": "array",
                                                                               "items": _ref("Event")},
                                                                    "attempts": {"type": "array",
                                                                                 "items": _ref("Attempt")}}}]},
                                                     401, 404, 503)}},
            "/tasks/{id}/cancel": {"post": {
                "summary": "Ask for a cancel (the leader carries it out)", "parameters": [_ID], "security": write,
                "requestBody": {"required": False, "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"reason": {"type": "string"}}}}}},
                "responses": _ok("cancel requested", _ref("Task"), 401, 403, 404, 409, 413, 503, code="202")}},
            "/tasks/{id}/retry": {"post": {
                "summary": "Start the next attempt of a finished task", "parameters": [_ID], "security": write,
                "requestBody": {"required": False, "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"force": {"type": "boolean",
                                                               "description": "retry a Succeeded task"}}}}}},
                "responses": _ok("requeued", _ref("Task"), 401, 403, 404, 409, 413, 422, 503)}},
            "/tasks/{id}/logs": {"get": {
                "summary": "The current attempt's log", "parameters": [
                    _ID, _q("tail", {"type": "integer", "minimum": 0, "maximum": 10000, "default": 100}, "lines"),
                    _q("follow", {"type": "string", "enum": ["0", "1"]}, "1: stream until the Job ends")],
                "responses": {"200": {"description": "text, one line per line",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}},
                              **{str(e): _ERR for e in (400, 401, 404, 503)}}}},
            "/cluster": {"get": {"summary": "Leader, epoch, replicas, leader changes, tasks per status",
                                 "responses": _ok("the cluster", _CLUSTER, 401, 503)}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}},
        },
        "components": {
            "schemas": {"Task": _TASK, "Event": _EVENT, "Attempt": _ATTEMPT,
                        "Error": {"type": "object", "required": ["error", "detail"],
                                  "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}}},
            "responses": {"Error": {"description": "an error",
                                    "content": {"application/json": {"schema": _ref("Error")}}}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "session": {"type": "apiKey", "in": "cookie", "name": "nightwatch_session",
                                            "description": "console sign-in; POSTs need X-CSRF-Token"}},
        },
    }
