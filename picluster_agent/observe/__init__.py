"""What an agent tells the people watching it: Prometheus metrics, systemd's notify and
watchdog, journald's priorities and fields."""
