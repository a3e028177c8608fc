"""AnswerHolds: the first message of a response waits for the request's held work; work held
after the response started, or without the middleware, is waited for in place."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from medmesh.http.answer_holds import AnswerHolds, hold_answer

SCOPE: Scope = {"type": "http", "method": "GET", "path": "/", "headers": []}


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def test_the_response_starts_only_after_the_held_work_is_done() -> None:
    events: list[str] = []

    async def slow_record() -> None:
        await asyncio.sleep(0.05)
        events.append("recorded")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await hold_answer(Request(scope), slow_record())
        events.append("route done")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(message: Message) -> None:
        events.append(message["type"])

    await AnswerHolds(app)(dict(SCOPE), _no_body, send)
    assert events == ["route done", "recorded", "http.response.start", "http.response.body"]


async def test_work_held_after_the_response_started_is_waited_for_in_place() -> None:
    events: list[str] = []

    async def record() -> None:
        await asyncio.sleep(0.01)
        events.append("recorded")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await hold_answer(Request(scope), record())
        await send({"type": "http.response.body", "body": b"event"})

    async def send(message: Message) -> None:
        events.append(message["type"])

    await AnswerHolds(app)(dict(SCOPE), _no_body, send)
    assert events == ["http.response.start", "recorded", "http.response.body"]


async def test_without_the_middleware_held_work_is_waited_for_in_place() -> None:
    events: list[str] = []

    async def record() -> None:
        events.append("recorded")

    await hold_answer(Request(dict(SCOPE)), record())
    assert events == ["recorded"]


async def test_a_failed_held_work_fails_the_response_before_it_starts() -> None:
    sent: list[Message] = []

    async def failing() -> None:
        raise RuntimeError("audit log unavailable")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await hold_answer(Request(scope), failing())
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(message: Message) -> None:
        sent.append(message)

    with pytest.raises(RuntimeError, match="audit log unavailable"):
        await AnswerHolds(app)(dict(SCOPE), _no_body, send)
    assert sent == []
