"""The fault suite's tooling: nodes in network namespaces, faults, and a history checker.

Used by the fault tests (tests/integration/test_fault_suite.py, test_fault_findings.py) and by
`bench/chaos.py`: development tooling, like `etcd/localcluster.py`, that nothing in the
agent imports. Modules:

    netns     namespaces, a bridge and veth pairs; iptables rules inside a namespace
    cluster   etcd members and agents as processes, one node per namespace, and the faults
    history   the checker: pure logic over recorded events (table-driven unit tests)
    recorder  what feeds the checker: etcd's history, the jobs' own marks, submit outcomes
    schedule  random faults from a seed, and the run that injects them (bench and tests)
    wallclock a `sitecustomize` that steps an agent's wall clock (time.time) on demand
"""
