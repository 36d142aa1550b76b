"""`fleetlens alerts receiver`: a tiny webhook receiver that prints what it gets.

For the demo and for trying a configuration: it accepts every format fleetlens sends
(alertmanager, slack, pagerduty, json), prints one line per alert, optionally checks the
bearer token and the HMAC signature, and can append every body to an NDJSON file.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fleetlens.alerts.deliver import SIGNATURE_HEADER, TIMESTAMP_HEADER

MAX_BODY = 4 * 1024 * 1024


def describe(body: dict[str, Any]) -> list[str]:
    """One line per alert, whatever the format."""
    if body.get("version") in ("4", "fleetlens.alerts.v1") and "alerts" in body:
        out = []
        for a in body["alerts"]:
            labels = a.get("labels", {})
            keys = ("tenant", "node", "gpu", "xid")
            where = " ".join(f"{k}={labels[k]}" for k in keys if k in labels)
            out.append(f"{a.get('status', '?').upper():8} {labels.get('alertname', '?')} "
                       f"[{labels.get('severity', '')}] {where} - "
                       f"{a.get('annotations', {}).get('summary', '')}")
        return out
    if "event_action" in body:
        p = body.get("payload", {})
        return [f"{body['event_action'].upper():8} pagerduty {body.get('dedup_key')} - "
                f"{p.get('summary', '')}"]
    if "text" in body:
        return [f"SLACK    {line}" for line in str(body["text"]).splitlines()]
    return [f"UNKNOWN  {json.dumps(body)[:200]}"]


def make_server(host: str, port: int, hmac_secret: str = "", bearer_token: str = "",
                out_file: str | None = None, status: int = 200,
                echo=print) -> ThreadingHTTPServer:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet: we print alerts, not access logs
            pass

        def _answer(self, code: int, text: str) -> None:
            data = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._answer(413, "too large")
                return
            raw = self.rfile.read(length)
            if bearer_token and self.headers.get("Authorization") != f"Bearer {bearer_token}":
                echo(f"REJECTED {self.path}: missing or wrong bearer token")
                self._answer(401, "unauthorized")
                return
            if hmac_secret:
                ts = self.headers.get(TIMESTAMP_HEADER, "")
                mac = hmac.new(hmac_secret.encode(), ts.encode() + b"." + raw, hashlib.sha256)
                if not hmac.compare_digest("sha256=" + mac.hexdigest(),
                                           self.headers.get(SIGNATURE_HEADER, "")):
                    echo(f"REJECTED {self.path}: bad signature")
                    self._answer(401, "bad signature")
                    return
            try:
                body = json.loads(raw)
            except ValueError:
                echo(f"REJECTED {self.path}: not JSON")
                self._answer(400, "not JSON")
                return
            with lock:
                for line in describe(body):
                    echo(line)
                if out_file:
                    with open(out_file, "a") as f:
                        f.write(json.dumps({"path": self.path, "headers": dict(self.headers),
                                            "body": body}) + "\n")
            self._answer(status, "ok")

    return ThreadingHTTPServer((host, port), Handler)


def serve(host: str, port: int, hmac_secret: str = "", bearer_token: str = "",
          out_file: str | None = None, status: int = 200) -> int:
    def echo(line: str) -> None:
        print(f"receiver: {line}", flush=True)

    server = make_server(host, port, hmac_secret, bearer_token, out_file, status, echo)
    h, p = server.server_address[:2]
    print(f"receiver: listening on http://{h}:{p}/", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    sys.stdout.flush()
    return 0
