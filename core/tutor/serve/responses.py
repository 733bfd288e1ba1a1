"""Errors in OpenAI's shape, {"error": {"message", "type", "param", "code"}}, for every route of `tutor serve`."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from pydantic import ValidationError


def error(status: int, message: str, *, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None,
          headers: dict | None = None):
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status, headers=headers)


def bad_body(err: ValidationError):
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or None
    return error(400, f"{where or 'body'}: {first['msg']}", param=where)
