"""`picluster demo`: placeholder until written."""


def run_demo(agents: int = 3, jobs: int = 0) -> int:
    return 0
