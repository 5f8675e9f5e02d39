#!/usr/bin/env python3
"""A rate limit service for tests: envoy.service.ratelimit.v3
RateLimitService.ShouldRateLimit over gRPC (python3-grpcio, generic
handlers, the protobuf read and written by hand). Each descriptor has its
own count; a request whose descriptor has been seen more than --limit
times is answered OVER_LIMIT. Every request is logged as one line:
"request domain=D descriptors=k=v,k=v;k=v -> CODE"."""
import argparse
import sys
from concurrent import futures

import grpc

OK, OVER_LIMIT = 1, 2


def fields(buf):
    """(field number, wire type, value) of a protobuf message."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(buf, i)
        elif wt == 2:
            n, i = varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("wire type %d" % wt)
        yield num, wt, v


def varint(buf, i):
    shift = v = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, i
        shift += 7


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--limit", type=int, default=3)
    args = ap.parse_args()
    counts = {}

    def should_rate_limit(request, context):
        domain, descriptors = "", []
        for num, _, v in fields(request):
            if num == 1:
                domain = v.decode()
            elif num == 2:
                entries = []
                for enum, _, ev in fields(v):
                    if enum == 1:
                        kv = {n: x.decode() for n, _, x in fields(ev)}
                        entries.append("%s=%s" % (kv.get(1, ""), kv.get(2, "")))
                descriptors.append(",".join(entries))
        code = OK
        for d in descriptors:
            counts[(domain, d)] = counts.get((domain, d), 0) + 1
            if counts[(domain, d)] > args.limit:
                code = OVER_LIMIT
        print("request domain=%s descriptors=%s -> %d" % (domain, ";".join(descriptors), code), flush=True)
        return bytes([0x08, code])

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.unary_unary_rpc_method_handler(should_rate_limit)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("envoy.service.ratelimit.v3.RateLimitService",
                                              {"ShouldRateLimit": handler}),))
    server.add_insecure_port("127.0.0.1:%d" % args.port)
    server.start()
    print("listening on %d" % args.port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    sys.exit(main())
