"""Process supervision on a node: the job supervisor (jobshim), its client (runner), the janitor."""
