"""The agent's HTTPS API: every node answers submit, status, list, cancel, wait and the
rest over mutual TLS with the cluster CA (docs/API.md). `server.py` runs it, `auth.py`
decides who may call what, each feature adds its routes in a module of its own."""
