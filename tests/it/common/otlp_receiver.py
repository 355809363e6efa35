"""An OTLP/HTTP metrics receiver for the tests, independent of the daemon's
encoder: each POST is decoded with the official opentelemetry-proto package
and appended as one JSON line (the request as protobuf's JSON mapping with
field names kept, plus the headers) to OUT. CONTROL is a JSON file saying
what to answer: {"status": 200, "rejected": N, "message": "..."}.

usage: otlp_receiver.py PORT OUT CONTROL
"""
import gzip
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

PORT, OUT, CONTROL = int(sys.argv[1]), sys.argv[2], sys.argv[3]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", content_type="application/x-protobuf"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.reply(200, b"ok", "text/plain")

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = raw
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(raw)
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        record = {
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "wire_bytes": len(raw),
            "request": MessageToDict(request, preserving_proto_field_name=True),
        }
        with open(CONTROL) as f:
            control = json.load(f)
        status = control.get("status", 200)
        if status == 200:
            # Recorded only when taken, so the file lists what was delivered.
            with open(OUT, "a") as f:
                f.write(json.dumps(record) + "\n")
        response = ExportMetricsServiceResponse()
        if control.get("rejected"):
            response.partial_success.rejected_data_points = control["rejected"]
            response.partial_success.error_message = control.get("message", "")
        self.reply(status, response.SerializeToString() if status == 200 else b"")


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
