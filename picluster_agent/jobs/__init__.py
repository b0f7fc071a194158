"""The job model and its rules: specs, ids, records and their stored form."""
