#!/usr/bin/env python3
"""A fault-injecting HTTP proxy for Elasticsearch, on loopback only (scripts/faults.sh).

    fault-proxy.py --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT [--every N] [--statuses 429,503]

Forwards every request to the upstream (real TCP, keep-alive), except that
every Nth `_bulk` request is answered by the proxy itself with the next
status of --statuses (in turn) and an Elasticsearch-style error body,
without reaching the upstream. Prints `Ready http://LISTEN` once listening;
on SIGTERM/SIGINT prints `injected K of B bulk requests` and exits 0.
"""
import argparse
import http.client
import http.server
import json
import signal
import sys
import threading

HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--every", type=int, default=3)
    ap.add_argument("--statuses", default="429,503")
    a = ap.parse_args()
    host, port = a.listen.rsplit(":", 1)
    if not host.startswith("127.") and host != "localhost":
        sys.exit("fault-proxy: --listen must be a loopback address")
    up_host, up_port = a.upstream.rsplit(":", 1)
    if not up_host.startswith("127.") and up_host != "localhost":
        sys.exit("fault-proxy: --upstream must be a loopback address")
    statuses = [int(s) for s in a.statuses.split(",")]
    lock = threading.Lock()
    counts = {"bulk": 0, "injected": 0}
    local = threading.local()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def upstream(self):
            if getattr(local, "conn", None) is None:
                local.conn = http.client.HTTPConnection(up_host, int(up_port), timeout=60)
            return local.conn

        def reply(self, status, headers, body):
            self.send_response(status)
            for k, v in headers:
                if k.lower() not in HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def handle_any(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else None
            if self.command == "POST" and self.path.split("?")[0].endswith("/_bulk"):
                with lock:
                    counts["bulk"] += 1
                    inject = counts["bulk"] % a.every == 0
                    if inject:
                        status = statuses[counts["injected"] % len(statuses)]
                        counts["injected"] += 1
                if inject:
                    kind = "es_rejected_execution_exception" if status == 429 else "unavailable_shards_exception"
                    err = {"error": {"type": kind, "reason": "injected by fault-proxy"}, "status": status}
                    self.reply(status, [("Content-Type", "application/json")], json.dumps(err).encode())
                    return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            for attempt in range(2):
                try:
                    c = self.upstream()
                    c.request(self.command, self.path, body=body, headers=headers)
                    r = c.getresponse()
                    data = r.read()
                    break
                except (http.client.HTTPException, OSError):
                    local.conn = None
                    if attempt == 1:
                        self.reply(502, [], b"upstream unreachable")
                        return
            self.reply(r.status, r.getheaders(), data)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any

    server = http.server.ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True

    def stop(*_):
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"Ready http://{host}:{server.server_address[1]}", flush=True)
    server.serve_forever()
    print(f"injected {counts['injected']} of {counts['bulk']} bulk requests", flush=True)


if __name__ == "__main__":
    main()
