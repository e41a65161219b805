"""`python -m server.pb` regenerates the protobuf code."""

from server.pb import build

build()
print("generated protobuf code in server/pb/trace_guard")
