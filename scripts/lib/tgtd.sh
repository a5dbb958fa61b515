# Start and stop a tgtd serving one file as LUN 1 of one target, for the
# benchmark scripts (sourced, not run). tgtd ignores SIGTERM, so it is
# stopped through its control port: the target is deleted first (with
# --force, as an initiator may still be logged in), then the daemon.
#
#   tgtd_start IMAGE IQN   sets tgtd_pid, tgtd_cport and tgtd_url
#   tgtd_stop

tgtd_start() { # image iqn
    local img=$1 iqn=$2
    local port=$((20000 + RANDOM % 10000))
    tgtd_cport=$((10000 + RANDOM % 9000))
    tgtd -f --iscsi portal=127.0.0.1:$port --control-port $tgtd_cport >/dev/null 2>&1 &
    tgtd_pid=$!
    for _ in $(seq 50); do
        tgtadm -C $tgtd_cport --op show --mode system >/dev/null 2>&1 && break
        sleep 0.1
    done
    tgtadm -C $tgtd_cport --lld iscsi --op new --mode target --tid 1 -T "$iqn"
    tgtadm -C $tgtd_cport --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$img"
    tgtadm -C $tgtd_cport --lld iscsi --op bind --mode target --tid 1 -I ALL
    tgtd_url=iscsi://127.0.0.1:$port/$iqn/1
}

tgtd_stop() {
    [[ -n ${tgtd_pid:-} ]] || return 0
    tgtadm -C $tgtd_cport --lld iscsi --op delete --force --mode target --tid 1 >/dev/null 2>&1 || true
    tgtadm -C $tgtd_cport --op delete --mode system >/dev/null 2>&1 || true
    sleep 0.3
    kill -9 $tgtd_pid 2>/dev/null || true
    wait $tgtd_pid 2>/dev/null || true
}
