"""Generated gRPC stubs for the archsearch.v1 wire contract (see archsearch.proto)."""
