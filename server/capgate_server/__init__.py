"""capgate server: gRPC services over the store, the CLI and the admin tools."""
