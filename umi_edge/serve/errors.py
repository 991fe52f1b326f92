"""HTTP errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}, each with its status."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ApiError(Exception):
    """A request that ends in an error response; `param` names the request field at fault (e.g. messages[2])."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(param: str | None, message: str, code: str | None = None) -> ApiError:
    """400 whose message starts with the field it names, so a client's log line says where to look."""
    return ApiError(400, f"{param}: {message}" if param else message, param=param, code=code)
