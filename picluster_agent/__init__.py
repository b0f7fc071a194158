"""picluster agent: etcd-elected master, durable job queue, workers."""

__version__ = "0.1.0"
