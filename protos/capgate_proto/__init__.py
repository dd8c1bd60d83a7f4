"""The capgate gRPC API as Python modules (generated; see tools/gen_protos.py)."""
