"""An HTTP endpoint for the tests that records requests: appends one JSON line per POST
(path, headers, body) to a file. It answers 503 to the first FAIL_FIRST requests (to test
retries), then STATUS (200 unless given), with `Location: LOCATION` when one is given (a
redirect).

Usage: python3 http_recorder.py OUT_FILE [FAIL_FIRST] [STATUS] [LOCATION]  -- prints the port
(127.0.0.1).
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

fail_first = int(sys.argv[2]) if len(sys.argv) > 2 else 0
answer = int(sys.argv[3]) if len(sys.argv) > 3 else 200
location = sys.argv[4] if len(sys.argv) > 4 else None
seen = 0


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        global seen
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        seen += 1
        status = 503 if seen <= fail_first else answer
        with open(sys.argv[1], "a") as out:
            out.write(json.dumps({
                "path": self.path,
                "status": status,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": json.loads(body) if body else None,
            }) + "\n")
        self.send_response(status)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
