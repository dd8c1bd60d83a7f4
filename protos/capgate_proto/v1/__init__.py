"""Generated gRPC stubs for capgate.v1 (tools/gen_protos.py)."""
