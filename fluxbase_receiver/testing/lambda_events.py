"""AWS Lambda events as API Gateway, a Function URL or an ALB sends them, and a context.

Standard library only: for tests, and for ``fluxbase-receiver lambda-event``
(``sam local invoke -e``).
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["DEFAULT_PATH", "LambdaContext", "LambdaFormat", "lambda_event"]

LambdaFormat = Literal["v2", "v1", "url", "alb"]
"""API Gateway HTTP API (payload 2.0), API Gateway REST API (1.0), a Function URL, or an
Application Load Balancer."""

DEFAULT_PATH = "/webhooks/fluxbase"


class LambdaContext:
    """A stand-in for the AWS Lambda context object (30 s of remaining time)."""

    function_name = "fluxbase-webhooks"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:fluxbase-webhooks"
    memory_limit_in_mb = 128
    log_group_name = "/aws/lambda/fluxbase-webhooks"
    log_stream_name = "2025/01/01/[$LATEST]0123456789abcdef"

    def __init__(self, timeout: float = 30.0) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the invocation would time out."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def lambda_event(
    body: bytes,
    headers: Mapping[str, str],
    *,
    path: str = DEFAULT_PATH,
    method: str = "POST",
    format: LambdaFormat = "v2",
) -> dict[str, Any]:
    """The event AWS Lambda receives for this request from API Gateway, a Function URL or an ALB.

    The body is passed as text, or base64 (``isBase64Encoded``) when it is not UTF-8.
    """
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode("ascii"), True
    now = datetime.now(UTC)
    request_id = str(uuid.uuid4())
    user_agent = next((v for k, v in headers.items() if k.lower() == "user-agent"), "")
    if format == "alb":
        return {
            "requestContext": {
                "elb": {
                    "targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:"
                    "targetgroup/fluxbase-webhooks/0123456789abcdef"
                }
            },
            "httpMethod": method,
            "path": path,
            "queryStringParameters": {},
            "headers": {name.lower(): value for name, value in headers.items()},
            "body": text,
            "isBase64Encoded": encoded,
        }
    if format == "v1":
        return {
            "resource": path,
            "path": path,
            "httpMethod": method,
            "headers": dict(headers),
            "multiValueHeaders": {name: [value] for name, value in headers.items()},
            "queryStringParameters": None,
            "multiValueQueryStringParameters": None,
            "pathParameters": None,
            "stageVariables": None,
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "abcdef1234",
                "httpMethod": method,
                "path": f"/prod{path}",
                "resourcePath": path,
                "stage": "prod",
                "requestId": request_id,
                "requestTimeEpoch": int(now.timestamp() * 1000),
                "identity": {"sourceIp": "127.0.0.1", "userAgent": user_agent},
            },
            "body": text,
            "isBase64Encoded": encoded,
        }
    route_key = "$default" if format == "url" else f"{method} {path}"
    domain = (
        "abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws"
        if format == "url"
        else "abcdef1234.execute-api.us-east-1.amazonaws.com"
    )
    return {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": "",
        "headers": {name.lower(): value for name, value in headers.items()},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": domain.split(".", 1)[0],
            "domainName": domain,
            "domainPrefix": domain.split(".", 1)[0],
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": user_agent,
            },
            "requestId": request_id,
            "routeKey": route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "body": text,
        "isBase64Encoded": encoded,
    }
