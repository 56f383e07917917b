"""Generated protobuf and gRPC code for the audiomemory.v1 wire contract. Do not edit."""
