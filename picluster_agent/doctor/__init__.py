"""`picluster doctor`: one line per check of a cluster's health (cli/doctor.py prints them)."""
