#!/usr/bin/env python3
"""A stand-in Kubernetes API server for sluice-kube-sync's tests: it replays
recorded list answers and watch event streams from a scenario file, and logs
every request, so a test can check what the sync asked and in what order.

There is no API server on the test machines; this speaks the part of its
protocol a list+watch client uses: `GET <path>?limit=&continue=` answers a
List (pages by `continue`), `GET <path>?watch=1&resourceVersion=` streams
events (chunked, one JSON object per line: ADDED, MODIFIED, DELETED,
BOOKMARK, ERROR), and paths it does not know get 404 with a Status.

Scenario (JSON): {"<path>": {"list": [answer...], "pages": {token: answer},
"watch": [stream...]}}. The n-th list (or watch) request of a path gets
entry n, the last one again once they run out. A list answer is the List
object, or {"status": 410, "body": {...}}; a stream is {"events": [...],
"then": "close"|"hold"} or {"status": N, "body": {...}}. "hold" keeps the
stream open, sending nothing, until the client goes or 60 s pass.

Usage: fake_apiserver.py --scenario FILE --log FILE [--token T]
       [--cert PEM --key PEM]; prints "listening on PORT" once ready.
"""
import argparse
import json
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--token", default="")
    ap.add_argument("--cert", default="")
    ap.add_argument("--key", default="")
    args = ap.parse_args()
    with open(args.scenario) as f:
        scenario = json.load(f)
    counts = {}
    lock = threading.Lock()
    log = open(args.log, "a", buffering=1)

    def pick(path, mode):
        entry = scenario.get(path)
        if entry is None or not entry.get(mode):
            return None
        with lock:
            n = counts.get((path, mode), 0)
            counts[(path, mode)] = n + 1
        answers = entry[mode]
        return answers[min(n, len(answers) - 1)]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):  # quiet: the request log is ours
            pass

        def send_json(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def status(self, code, reason, message):
            self.send_json(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "message": message, "reason": reason, "code": code})

        def chunk(self, data):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            log.write(self.path + "\n")
            if args.token and self.headers.get("Authorization") != "Bearer " + args.token:
                return self.status(401, "Unauthorized", "Unauthorized")
            if query.get("watch", ["0"])[0] in ("1", "true"):
                return self.watch(url.path)
            if "continue" in query:
                entry = scenario.get(url.path, {})
                page = entry.get("pages", {}).get(query["continue"][0])
                if page is None:
                    return self.status(410, "Expired", "continue token expired")
                return self.send_json(200, page)
            answer = pick(url.path, "list")
            if answer is None:
                return self.status(404, "NotFound", "the server could not find the requested resource")
            if "status" in answer and "body" in answer:
                return self.send_json(answer["status"], answer["body"])
            return self.send_json(200, answer)

        def watch(self, path):
            stream = pick(path, "watch")
            if stream is None:
                return self.status(404, "NotFound", "the server could not find the requested resource")
            if "status" in stream:
                return self.send_json(stream["status"], stream.get("body", {}))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for ev in stream.get("events", []):
                    self.chunk(json.dumps(ev).encode() + b"\n")
                if stream.get("then", "hold") == "hold":
                    deadline = time.time() + 60
                    self.connection.settimeout(0.2)
                    while time.time() < deadline:
                        try:
                            if self.connection.recv(1) == b"":
                                return  # the client went away
                        except (TimeoutError, ssl.SSLWantReadError):
                            continue
                        except OSError:
                            return
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("listening on %d" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
