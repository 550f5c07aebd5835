"""The gRPC edge: how every method is served (roles, limits, decoding), errors to statuses (only
here), health, one module per servicer and the server builder. Nothing below ``gateway`` imports
gRPC; absolute imports keep ``import grpc`` meaning the library, not this package."""
