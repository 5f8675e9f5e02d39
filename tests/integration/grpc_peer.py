#!/usr/bin/python3
"""A real gRPC server and client for the HTTP/2 integration tests (Debian's
python3-grpcio; messages are raw bytes, so no protobuf is needed).

server --port P --name NAME [--fail-first K] [--cert FILE --key FILE]
    Serves sluice.test.Echo on 127.0.0.1:P (over TLS with a certificate)
    and prints "listening" when up.
    Unary echoes "NAME:" + the request, with a trailer x-served-by: NAME;
    ServerStream answers N (the request's digits) messages; ClientStream
    joins what it got; Bidi echoes each message as it comes; Flaky fails
    its first K calls (across the server) with UNAVAILABLE; Deadline
    answers the time the client gave it, in ms; Abort fails with the
    status named by the request (e.g. "5"); Slow answers after the
    request's number of ms; Fault is Unary under another name; Big streams
    200 messages of 32 KiB (the client's "cancel" takes one, then cancels).
client --target HOST:PORT --authority AUTH --call KIND [--n N] [--timeout S] [--metadata k=v]
    Makes one call and prints one JSON line: code, details, responses,
    trailing metadata.
"""
import argparse
import json
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "sluice.test.Echo"


def serve(args):
    lock = threading.Lock()
    flaky = {"left": args.fail_first}

    def unary(req, ctx):
        # What the tests read back from a mirror, whose answer nobody sees.
        print("unary %s" % req.decode(errors="replace"), flush=True)
        ctx.set_trailing_metadata((("x-served-by", args.name),))
        return args.name.encode() + b":" + req

    def server_stream(req, ctx):
        for i in range(int(req.decode() or "0")):
            yield b"%s:%d" % (args.name.encode(), i)

    def client_stream(it, ctx):
        return b"|".join(it)

    def bidi(it, ctx):
        for m in it:
            yield b"echo:" + m

    def flaky_call(req, ctx):
        with lock:
            fail = flaky["left"] > 0
            if fail:
                flaky["left"] -= 1
        if fail:
            ctx.abort(grpc.StatusCode.UNAVAILABLE, "not yet")
        return b"ok"

    def deadline(req, ctx):
        left = ctx.time_remaining()
        return b"none" if left is None else str(int(left * 1000)).encode()

    def big(req, ctx):
        chunk = b"x" * 32768
        for _ in range(200):
            yield chunk

    def slow(req, ctx):
        time.sleep(int(req.decode() or "0") / 1000.0)
        return b"slept"

    def abort(req, ctx):
        code = int(req.decode())
        status = next(c for c in grpc.StatusCode if c.value[0] == code)
        ctx.abort(status, "asked to fail")

    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Flaky": grpc.unary_unary_rpc_method_handler(flaky_call),
        "Deadline": grpc.unary_unary_rpc_method_handler(deadline),
        "Abort": grpc.unary_unary_rpc_method_handler(abort),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Big": grpc.unary_stream_rpc_method_handler(big),
        "Fault": grpc.unary_unary_rpc_method_handler(unary),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    if args.cert:
        with open(args.key, "rb") as k, open(args.cert, "rb") as c:
            creds = grpc.ssl_server_credentials(((k.read(), c.read()),))
        server.add_secure_port("127.0.0.1:%d" % args.port, creds)
    else:
        server.add_insecure_port("127.0.0.1:%d" % args.port)
    server.start()
    print("listening", flush=True)
    server.wait_for_termination()


def call(args):
    opts = [("grpc.default_authority", args.authority), ("grpc.enable_retries", 0)]
    metadata = tuple(tuple(kv.split("=", 1)) for kv in args.metadata)
    out = {"code": "OK", "details": "", "responses": [], "trailers": {}}
    with grpc.insecure_channel(args.target, options=opts) as ch:
        path = "/%s/%s" % (SERVICE, {"unary": "Unary", "server": "ServerStream", "client": "ClientStream",
                                     "bidi": "Bidi", "flaky": "Flaky", "deadline": "Deadline",
                                     "abort": "Abort", "slow": "Slow", "fault": "Fault",
                                     "cancel": "Big"}[args.call])
        try:
            if args.call in ("unary", "flaky", "deadline", "abort", "slow", "fault"):
                fn = ch.unary_unary(path)
                body = args.message.encode()
                resp, c = fn.with_call(body, timeout=args.timeout, metadata=metadata)
                out["responses"] = [resp.decode()]
            elif args.call == "cancel":
                # Takes the first of a big stream's messages, then cancels.
                c = ch.unary_stream(path)(b"", timeout=args.timeout, metadata=metadata)
                out["responses"] = [str(len(next(c)))]
                time.sleep(0.2)  # the rest of the answer piles up in sluiced meanwhile
                c.cancel()
                out["code"] = "CANCELLED"
                print(json.dumps(out), flush=True)
                return
            elif args.call == "server":
                fn = ch.unary_stream(path)
                c = fn(str(args.n).encode(), timeout=args.timeout, metadata=metadata)
                out["responses"] = [m.decode() for m in c]
            elif args.call == "client":
                fn = ch.stream_unary(path)
                resp, c = fn.with_call(iter([b"m%d" % i for i in range(args.n)]), timeout=args.timeout,
                                       metadata=metadata)
                out["responses"] = [resp.decode()]
            else:
                fn = ch.stream_stream(path)
                # Each message waits for the answer to the one before: the
                # exchange really goes both ways at once.
                q = []
                ev = threading.Event()

                def gen():
                    for i in range(args.n):
                        ev.clear()
                        yield b"b%d" % i
                        ev.wait(5)
                c = fn(gen(), timeout=args.timeout, metadata=metadata)
                for m in c:
                    q.append(m.decode())
                    ev.set()
                out["responses"] = q
            out["trailers"] = {k: v for k, v in (c.trailing_metadata() or ())}
        except grpc.RpcError as e:
            out["code"] = e.code().name
            out["details"] = e.details() or ""
            out["trailers"] = {k: v for k, v in (e.trailing_metadata() or ())}
    print(json.dumps(out), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--fail-first", type=int, default=0)
    s.add_argument("--cert", default="")  # with --key: serve TLS (ALPN h2)
    s.add_argument("--key", default="")
    c = sub.add_parser("client")
    c.add_argument("--target", required=True)
    c.add_argument("--authority", required=True)
    c.add_argument("--call", required=True)
    c.add_argument("--n", type=int, default=3)
    c.add_argument("--message", default="hi")
    c.add_argument("--timeout", type=float, default=10)
    c.add_argument("--metadata", action="append", default=[])
    args = p.parse_args()
    serve(args) if args.mode == "server" else call(args)


if __name__ == "__main__":
    sys.exit(main())
