"""Reading a predict request's body within ``MLOPS_SERVING_MAX_BODY_BYTES`` (bigger: 413), from
FastAPI's request or straight from the ASGI ``receive`` channel (the fast path)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request

from include.mlops.serving.schema import FieldError, RequestRejected


def too_large(size: int, limit: int, at_least: bool = False) -> str:
    return (
        f"request body of {'more than ' if at_least else ''}{size} bytes is over the limit of {limit} bytes (MLOPS_SERVING_MAX_BODY_BYTES)"
    )


async def read_request_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestRejected(413, [FieldError(None, None, too_large(int(declared), limit))])
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestRejected(413, [FieldError(None, None, too_large(size, limit, at_least=True))])
        chunks.append(chunk)
    return b"".join(chunks)


async def read_asgi_body(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]], limit: int) -> bytes:
    """The request body straight from the ASGI ``receive`` channel, within the size limit."""
    for key, value in scope["headers"]:
        if key == b"content-length" and value.isdigit() and int(value) > limit:
            raise RequestRejected(413, [FieldError(None, None, too_large(int(value), limit))])
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError("the client went away before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestRejected(413, [FieldError(None, None, too_large(size, limit, at_least=True))])
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
