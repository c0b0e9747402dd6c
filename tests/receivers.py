"""Real local servers standing in for what alerts reach: an HTTP server receiving the
Slack-compatible and JSON webhooks, and an SMTP server (aiosmtpd) receiving the mails.

Both listen on 127.0.0.1 on a free port and keep what they received, in order.
The HTTP receiver can be told to answer 500 (a channel that is up but failing);
stopping it leaves a port that refuses connections (a channel that is down).
"""

from __future__ import annotations

import json
import socket
import threading
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebhookReceiver:
    def __init__(self):
        self.received: list[tuple[str, dict]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.status == 200:
                    receiver.received.append((self.path, json.loads(body)))
                self.send_response(receiver.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):  # keep test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str) -> list[dict]:
        return [body for p, body in self.received if p == path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class MailReceiver:
    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages: list[Message] = []
        receiver = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's)
                receiver.messages.append(message_from_bytes(envelope.content))
                return "250 OK"

        self.port = _free_port()  # aiosmtpd checks it is up by connecting to its port
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()
        self.running = True

    def stop(self) -> None:
        if self.running:  # a test may stop it early (a channel that is down)
            self.controller.stop()
            self.running = False
