"""The etcd adapter: the one client that talks to etcd, the key layout, local members for tests."""
