"""Shared HTTP plumbing for the Python services of the Skein demo shop (standard library only).

A service is a name and a table of routes: path -> handler(query) -> (status, JSON body).
`serve()` listens on 127.0.0.1:$PORT with HTTP/1.1 keep-alive, stamps every JSON answer and
the `x-served-by` header with $SKEIN_INSTANCE_ID (and `x-version` with $SKEIN_VERSION), answers
GET /health, logs one line per request to stderr (not the passing health checks) and stops promptly on SIGTERM or SIGINT.
With SHOP_FAIL_RATE=0.5 half of the answers (not /health) are 500s: a broken version to roll
out as a canary and watch roll back (README.md, "Canary walk-through").
"""

import json
import os
import random
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

INSTANCE_ID = os.environ.get("SKEIN_INSTANCE_ID") or "local"
VERSION = os.environ.get("SKEIN_VERSION") or ""


def _fail_rate():
    raw = os.environ.get("SHOP_FAIL_RATE", "0")
    try:
        rate = float(raw)
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:
        sys.stderr.write(f"SHOP_FAIL_RATE must be a number from 0 to 1, not {raw!r}\n")
        sys.exit(2)
    return rate


FAIL_RATE = _fail_rate()
MAX_DISCARD_BYTES = 1 << 20  # a request body larger than this closes the connection instead
_POSITIVE_INT = re.compile(r"[0-9]{1,18}")


class HttpError(Exception):
    """Raised by a route handler to answer `status` with `body` (a dict)."""

    def __init__(self, status, body):
        super().__init__(body.get("error", ""))
        self.status = status
        self.body = body


def positive_int(query, field):
    """The query parameter `field` as an int >= 1, or HttpError 400 naming the field."""
    values = query.get(field, [])
    if len(values) == 1 and _POSITIVE_INT.fullmatch(values[0]) and int(values[0]) > 0:
        return int(values[0])
    raise HttpError(400, {"error": f"{field} must be a positive integer", "field": field})


def record_route(kind, field, table):
    """A route answering the record of `table` (id -> dict) named by the query param `field`."""

    def handle(query):
        key = positive_int(query, field)
        record = table.get(key)
        if record is None:
            raise HttpError(404, {"error": f"no {kind} with id {key}", "field": field})
        return 200, {kind: record}

    return handle


def _make_handler(service, routes):
    routes = dict(routes)
    routes.setdefault("/health", lambda query: (200, {"status": "ok"}))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
        server_version = f"skein-shop-{service}"
        timeout = 75  # idle keep-alive connections close after this many seconds
        # One write per response: the head and the body are buffered and sent together. Written
        # apart, on a connection with Nagle's algorithm on, the body waited for the ACK of the
        # head, which the proxy's pooled connection delays (up to 40 ms per request). TCP_NODELAY
        # as well, so that a response larger than the buffer is not held back either.
        wbufsize = 64 * 1024
        disable_nagle_algorithm = True

        def do_GET(self):
            self._answer(head=False)

        def do_HEAD(self):
            self._answer(head=True)

        def __getattr__(self, name):
            # The base class answers 501 for a method without a do_<METHOD>; every method
            # other than GET and HEAD gets 405 instead.
            if name.startswith("do_"):
                return self._not_allowed
            raise AttributeError(name)

        def _not_allowed(self):
            self._send(405, {"error": f"method {self.command} not allowed", "allow": "GET, HEAD"},
                       extra_headers={"Allow": "GET, HEAD"})

        def _answer(self, head):
            url = urlsplit(self.path)
            route = routes.get(url.path)
            if route is None:
                self._send(404, {"error": f"no route for {url.path}"}, head=head)
                return
            if FAIL_RATE > 0 and url.path != "/health" and random.random() < FAIL_RATE:
                self._send(500, {"error": "injected failure (SHOP_FAIL_RATE)"}, head=head)
                return
            try:
                status, body = route(parse_qs(url.query, keep_blank_values=True))
            except HttpError as e:
                status, body = e.status, e.body
            except Exception as e:  # a bug: answer 500, log it, keep serving
                self.log_message("error in %s: %r", url.path, e)
                status, body = 500, {"error": "internal error"}
            self._send(status, body, head=head)

        def version_string(self):
            return self.server_version  # the Server header, without the Python version

        def send_error(self, code, message=None, explain=None):
            # Requests the base class rejects (bad request line, header too long, ...) get JSON
            # too, on a connection that closes.
            self.close_connection = True
            self._send(code, {"error": message or self.responses.get(code, ("error",))[0]})

        def _send(self, status, body, head=False, extra_headers=None):
            if not self.close_connection:
                self._discard_body()
            payload = json.dumps({**body, "served_by": INSTANCE_ID}).encode() + b"\n"
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("x-served-by", INSTANCE_ID)
            if VERSION:
                self.send_header("x-version", VERSION)
            for name, value in (extra_headers or {}).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if not head:
                self.wfile.write(payload)
            self.wfile.flush()
            self._status = status

        def _discard_body(self):
            # A request body left unread would be parsed as the next request: read a small
            # one, close the connection after the answer otherwise.
            if "Transfer-Encoding" in self.headers:
                self.close_connection = True
                return
            length = self.headers.get("Content-Length", "0")
            if not length.isascii() or not length.isdigit() or int(length) > MAX_DISCARD_BYTES:
                self.close_connection = True
            elif int(length) > 0:
                self.rfile.read(int(length))

        def parse_request(self):
            self._started = time.monotonic()  # the request line is in: start the clock
            return super().parse_request()

        def handle_one_request(self):
            self._status, self.command, self.path = None, None, "-"
            self._started = time.monotonic()
            super().handle_one_request()
            # A passing readiness check (every 100 ms) is not logged: it would bury the requests.
            if self._status is not None and not (self.path == "/health" and self._status == 200):
                ms = (time.monotonic() - self._started) * 1000
                what = f"{self.command} {self.path}" if self.command else repr(self.requestline[:80])
                sys.stderr.write(f"{what} {self._status} {ms:.1f}ms\n")

        def log_request(self, code="-", size="-"):
            pass  # handle_one_request logs one line per answered request

        def log_message(self, format, *args):
            sys.stderr.write(f"{self.client_address[0]} {format % args}\n")

    return Handler


def serve(service, routes):
    """Serve `routes` on 127.0.0.1:$PORT until SIGTERM or SIGINT; returns the exit code."""
    port = os.environ.get("PORT", "")
    if not port.isdigit() or not 0 < int(port) < 65536:
        sys.stderr.write(f"{service}: PORT must be set to a port number (1-65535), not {port!r}\n")
        return 2
    try:
        server = ThreadingHTTPServer(("127.0.0.1", int(port)), _make_handler(service, routes))
    except OSError as e:  # the port was taken: exit, and let the supervisor restart us
        sys.stderr.write(f"{service}: cannot listen on 127.0.0.1:{port}: {e.strerror}\n")
        return 1
    server.daemon_threads = True  # open keep-alive connections do not hold up the exit

    def stop(signum, frame):
        # shutdown() waits for serve_forever to return, so it cannot run on the main thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stderr.write(f"{service} ({INSTANCE_ID}) listening on 127.0.0.1:{port}\n")
    try:
        server.serve_forever(poll_interval=0.05)  # the stop flag is checked this often
    finally:
        server.server_close()
    sys.stderr.write(f"{service} ({INSTANCE_ID}) stopped\n")
    return 0
