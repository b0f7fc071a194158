"""Coordination recipes on etcd: a lease-holding session, the election, the node registry."""
