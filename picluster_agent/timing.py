"""The timing rule: how long a lease must live for the node to ride out an etcd leader loss.

A node may run its jobs only while its lease is certainly alive at the server. It knows a
lower bound of the server-side expiry: the send time of its last successful keepalive + TTL.
It kills its jobs `kill_margin` before that bound (the agent's lease guard), and the job
supervisor kills them `fence_margin` (a little less) before it if the agent itself is frozen.

So a node keeps its jobs through a fault only if a keepalive gets through within
TTL - kill_margin of the last good one. The worst ordinary fault is the loss of the etcd
leader (crash, reboot, a silent partition) just after a keepalive went through:

    the next keepalive is due            after  keepalive_interval(ttl)
    it may first wait on a silent member       KEEPALIVE_TIMEOUT
    the remaining members elect a leader       up to 2 x election timeout (raft draws each
                                               member's timeout from [E, 2E))
    plus a slack for the vote's disk writes    SLACK (an SD card's fsync)

Hence the rule, checked when an agent starts:

    TTL - kill_margin(TTL) >= keepalive_interval(TTL) + KEEPALIVE_TIMEOUT
                              + 2 x election_timeout + SLACK

With the etcd role's tuning (election timeout 2 s, heartbeat 200 ms, for SD cards) the
smallest TTL is 8 s, the default. etcd's own default election timeout (1 s) allows 6 s. A
shorter TTL makes failover faster but turns every etcd leader change into killed and re-run
jobs and a new master.

The cost of a longer TTL: a node that dies is noticed after TTL (its jobs re-run then, and a
dead master is replaced after TTL + about a second); a clean stop still hands over at once.
"""

from __future__ import annotations

import math

# Keepalives go out every TTL/3, but at least every second: renewals are cheap (they do not
# go through raft) and an early failure leaves more time to find another member.
KEEPALIVE_FRACTION = 1 / 3
KEEPALIVE_INTERVAL_MAX = 1.0
# One keepalive waits this long for a member before trying the next. A member without a
# leader holds a renewal until a leader is elected, so a short wait loses nothing.
KEEPALIVE_TIMEOUT = 1.0
# Time for the vote's own writes and the renewal's round trip after a new leader is elected.
SLACK = 0.5
# The lease guard kills jobs this long before the lease could expire (a loaded board's
# SIGKILL and reaping); the supervisor's fence is a quarter of it later, so that a live agent
# acts first and the supervisor only when the agent cannot.
KILL_MARGIN_MAX = 1.0
# The fence's share of the margin. The supervisor wakes on time even on a loaded machine
# (measured: at most 36 ms late at load 10), but the process it kills exits later: up to
# 0.37 s after the kill on a 2-core machine at load 10, most of the half margin (0.5 s) the
# fence had; the exit, not the signal, releases the job's files and sockets.
FENCE_FRACTION = 3 / 4


def keepalive_interval(ttl: float) -> float:
    return min(ttl * KEEPALIVE_FRACTION, KEEPALIVE_INTERVAL_MAX)


def kill_margin(ttl: float) -> float:
    return min(KILL_MARGIN_MAX, ttl / 3)


def fence_margin(ttl: float) -> float:
    return kill_margin(ttl) * FENCE_FRACTION


def leader_loss_budget(election_timeout: float, ttl: float) -> float:
    """Seconds a node needs, after its last good keepalive, to renew across a leader loss."""
    return keepalive_interval(ttl) + KEEPALIVE_TIMEOUT + 2 * election_timeout + SLACK


def rides_out_leader_loss(ttl: float, election_timeout: float) -> bool:
    return ttl - kill_margin(ttl) >= leader_loss_budget(election_timeout, ttl)


def min_lease_ttl(election_timeout: float) -> int:
    """The smallest whole TTL (seconds) that obeys the rule for this election timeout."""
    ttl = max(2, math.ceil(2 * election_timeout))
    while not rides_out_leader_loss(ttl, election_timeout):
        ttl += 1
    return ttl
