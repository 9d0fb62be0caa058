"""gRPC client of one device agent."""
