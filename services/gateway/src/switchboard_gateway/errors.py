"""One error body for every failure: ``{"error": {"code", "message", "field", "details"}}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from switchboard_contracts.common import ErrorCode, ErrorInfo, ServiceError
from switchboard_contracts.errors import field_of

STATUS = {
    ErrorCode.VALIDATION: 422,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.STALE_REVISION: 409,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}

HTTP_CODES = {400: ErrorCode.BAD_REQUEST, 403: ErrorCode.FORBIDDEN, 404: ErrorCode.NOT_FOUND}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: ErrorCode | str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {
            "error": {"code": str(code), "message": message, "field": field, "details": []}
        }
        self.headers = headers


def _body(info: ErrorInfo) -> dict[str, Any]:
    return {"error": info.model_dump(mode="json")}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body, exc.status, headers=exc.headers)

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(_body(exc.info), STATUS.get(exc.info.code, 500))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        drop = ("body", "query", "path", "header")
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse(
                {"error": {"code": "bad_request", "message": "the request body is not valid JSON",
                           "field": None, "details": []}},
                400,
            )  # fmt: skip
        details = [
            {"field": field_of(tuple(e["loc"]), drop), "message": str(e["msg"]).removeprefix("Value error, ")}
            for e in errors
        ]
        first = details[0] if details else {"field": None, "message": "invalid request"}
        message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        return JSONResponse(
            {
                "error": {
                    "code": "validation",
                    "message": message,
                    "field": first["field"],
                    "details": details,
                }
            },
            422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "error")
        return JSONResponse(
            {"error": {"code": str(code), "message": str(exc.detail), "field": None, "details": []}},
            exc.status_code,
            headers=getattr(exc, "headers", None),
        )
