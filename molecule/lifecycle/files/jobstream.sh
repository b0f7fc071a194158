#!/bin/bash
# A stream of jobs from the controller while a lifecycle step runs:
#   jobstream.sh DIR PICLUSTER [picluster submit options...]
# submits 3 long jobs (25 s), then a short one every second until DIR/stop exists. Each
# accepted job's id goes to DIR/ids; a submission refused for now (exit 3: etcd
# unavailable) is tried again, as a user would; one never accepted goes to DIR/failures.
set -u
dir=$1 cli=$2
shift 2
submit() {
    local id
    for _ in $(seq 1 60); do
        if id=$("$cli" "$@" 2>>"$dir/errors"); then
            echo "$id" >>"$dir/ids"
            return 0
        fi
        sleep 1
    done
    echo "never accepted: ${*: -3}" >>"$dir/failures"
}
opts=("$@")
for i in 1 2 3; do
    submit submit "${opts[@]}" --name "long-$i" -- sleep 25
done
n=0
while [ ! -e "$dir/stop" ]; do
    n=$((n + 1))
    submit submit "${opts[@]}" --name "short-$n" -- sh -c 'sleep 0.5; echo ok'
    sleep 1
done
touch "$dir/finished"
