"""An HTTP server that does what API Gateway's HTTP API does for the template's routes: each request becomes
a payload-format-2.0 event for the function the template names, and the function's answer the response."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from ferry.local.exceptions import FunctionError, StackStoppedError
from ferry.local.stack import LocalStack

log = logging.getLogger("ferry.local")
MAX_BODY = 10 * 1024 * 1024  # API Gateway refuses bodies over 10 MB itself


def api_event(method: str, raw_path: str, headers: dict[str, str], body: bytes, route_key: str,
              path_parameters: dict[str, str], source_ip: str) -> dict[str, Any]:
    """The API Gateway HTTP API (payload format 2.0) event for a request."""
    split = urlsplit(raw_path)
    text_like = headers.get("content-type", "").startswith(("application/json", "text/"))
    try:
        decoded, is_base64 = (body.decode("utf-8"), False) if text_like or not body else ("", True)
    except UnicodeDecodeError:
        decoded, is_base64 = "", True
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": split.path,
        "rawQueryString": split.query,
        "headers": headers,
        "queryStringParameters": dict(pair.split("=", 1) for pair in split.query.split("&") if "=" in pair) or None,
        "pathParameters": path_parameters or None,
        "requestContext": {
            "accountId": "000000000000", "apiId": "local", "domainName": "127.0.0.1", "stage": "$default",
            "requestId": str(uuid.uuid4()), "routeKey": route_key, "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now * 1000),
            "http": {"method": method, "path": split.path, "protocol": "HTTP/1.1", "sourceIp": source_ip,
                     "userAgent": headers.get("user-agent", "")},
        },
        "body": base64.b64encode(body).decode("ascii") if is_base64 else decoded,
        "isBase64Encoded": is_base64,
    }


class Gateway(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, stack: LocalStack, host: str, port: int, api_key: str | None = None):
        """With `api_key`, routes that the template protects go through its Lambda authorizer, which checks
        keys stored (hashed) in the embedded keys table, and the key is stored there; without, no auth."""
        self.stack = stack
        self.authorize = api_key is not None
        if api_key is not None:
            stack.store_api_key(api_key)
        super().__init__((host, port), _RequestHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def serve_in_background(self) -> threading.Thread:
        # a short poll: shutdown() waits for the loop to see it, and `ferry serve` should stop at once
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, name="gateway",
                                  daemon=True)
        thread.start()
        return thread


class _RequestHandler(BaseHTTPRequestHandler):
    server: Gateway
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def __getattr__(self, name: str) -> Any:
        """Every method reaches the routes (BaseHTTPRequestHandler looks up ``do_<METHOD>`` and answers 501 in
        HTML when it is missing): as in API Gateway, a method no route has is a JSON 404, not a 501."""
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """HTTP-level errors (a malformed request line, headers too long) in API Gateway's shape, not HTML."""
        self.close_connection = True
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        self._gateway_error(code, phrase)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _gateway_error(self, status: int, message: str) -> None:
        """Errors API Gateway makes itself have its shape, not the API's (the README says so)."""
        self._send(status, json.dumps({"message": message}).encode(), {"Content-Type": "application/json"})

    def _content_length(self) -> int | None:
        """The body's length from Content-Length (0 without one), or None when it is not one non-negative
        decimal integer (``-1``, ``abc``, ``+5``, two different values)."""
        values = {value.strip() for value in self.headers.get_all("Content-Length") or []}
        if not values:
            return 0
        if len(values) > 1 or not all(value.isascii() and value.isdigit() for value in values):
            return None
        return int(values.pop())

    def _handle(self) -> None:
        length = self._content_length()
        if length is None or length > MAX_BODY:
            # The body is never read, so the connection cannot carry another request: close it after answering.
            self.close_connection = True
            if length is None:
                self._gateway_error(400, "Bad Request")
            else:
                self._gateway_error(413, "Request Entity Too Large")
            return
        body = self.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        path = urlsplit(self.path).path
        for route in self.server.stack.routes:
            parameters = route.match(self.command, path)
            if parameters is not None:
                break
        else:
            self._gateway_error(404, "Not Found")
            return
        event = api_event(self.command, self.path, headers, body, f"{route.method} {route.path}", parameters,
                          self.client_address[0])
        if self.server.authorize and route.authorized and not self._authorized(event):
            return
        try:
            # As API Gateway invokes the function's alias, which a canary deployment splits between two versions
            # (the captures say which model version answered; API Gateway adds no header saying it, nor does this)
            result, _ = self.server.stack.invoke_route(route.function, event)
        except (FunctionError, StackStoppedError) as exc:  # the traceback is in the function's own log
            log.error("%s", exc)
            self._gateway_error(500, "Internal Server Error")
            return
        except Exception:
            log.exception("%s failed", route.function)
            self._gateway_error(500, "Internal Server Error")
            return
        self._respond(result)

    def _authorized(self, event: dict[str, Any]) -> bool:
        """As API Gateway: no identity source is a 401 without calling the authorizer; a refusal a 403."""
        if "authorization" not in event["headers"]:
            self._gateway_error(401, "Unauthorized")
            return False
        request = {**event, "type": "REQUEST", "identitySource": [event["headers"]["authorization"]],
                   "routeArn": f"arn:aws:execute-api:us-east-1:000000000000:local/$default/{event['routeKey']}"}
        try:
            answer = self.server.stack.invoke(self.server.stack.authorizer, request)
        except (FunctionError, StackStoppedError) as exc:
            log.error("the authorizer failed: %s", exc)
            self._gateway_error(500, "Internal Server Error")
            return False
        except Exception:
            log.exception("the authorizer failed")
            self._gateway_error(500, "Internal Server Error")
            return False
        if not (isinstance(answer, dict) and answer.get("isAuthorized") is True):
            self._gateway_error(403, "Forbidden")
            return False
        event["requestContext"]["authorizer"] = {"lambda": answer.get("context") or {}}
        return True

    def _respond(self, result: Any) -> None:
        if not isinstance(result, dict) or "statusCode" not in result:
            self._send(200, json.dumps(result).encode(), {"Content-Type": "application/json"})
            return
        body = result.get("body") or ""
        raw = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode("utf-8")
        headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
        for key, values in (result.get("multiValueHeaders") or {}).items():
            headers[key] = ",".join(str(v) for v in values)
        self._send(int(result["statusCode"]), raw, headers)

