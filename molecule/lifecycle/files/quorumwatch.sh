#!/bin/bash
# Watch etcd's quorum from the controller while a lifecycle step runs:
#   quorumwatch.sh DIR ETCDCTL-ARGS...
# every half second a linearizable read (it needs a quorum); one line per read in DIR/reads,
# "<unix time> <exit code>", until DIR/stop exists.
set -u
dir=$1
shift
while [ ! -e "$dir/stop" ]; do
    etcdctl "$@" --dial-timeout=2s --command-timeout=3s get --consistency=l /picluster/leader >/dev/null 2>>"$dir/errors"
    echo "$(date +%s) $?" >>"$dir/reads"
    sleep 0.5
done
touch "$dir/finished"
