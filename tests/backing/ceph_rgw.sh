#!/usr/bin/env bash
# A throwaway one-node Ceph with an S3 endpoint, for the S3 backing tests.
#
#   ceph_rgw.sh start DIR HTTP_PORT MON_PORT ACCESS_KEY SECRET_KEY [HTTPS_PORT CERT KEY]
#   ceph_rgw.sh stop DIR
#
# One monitor, one memstore OSD (data in RAM, nothing on disk) and radosgw (beast), started as
# plain foreground processes in their own sessions, everything on 127.0.0.1, everything under DIR.
# No systemd, no cephx, no mgr (nothing on the S3 path needs one). Debian 12 packages:
#   apt-get install --no-install-recommends ceph-mon ceph-osd radosgw ceph-common
#
# Settings that matter, and why:
#   ms mon client mode = crc      radosgw defaults to "secure", which cannot work with auth none:
#                                 it would retry the mon handshake forever.
#   paxos propose interval = 0.05 the default (1 s between osdmap proposals) makes each of rgw's
#                                 ~15 pool operations wait a second.
#   tcp_nodelay=1 (beast)         without it small requests stall on delayed ACKs (~40 ms each).
#   ports below 32768             a client socket on a port in the ephemeral range (even in
#                                 TIME-WAIT) makes the mon's bind fail after 15 s of retries.
#   stop order rgw, osd, mon      rgw can hang in shutdown without its OSD; an OSD waits ~5 s for
#                                 a mon that is gone.
# A started cluster leaves DIR/ready (the endpoint URL); on failure, whatever was started is
# stopped again and the logs stay in DIR/log.
set -Eeuo pipefail

action=${1:?usage: ceph_rgw.sh start|stop DIR ...}
dir=$(realpath -m "${2:?DIR required}")
conf=$dir/ceph.conf

say() { printf '[ceph_rgw %s] %s\n' "$(date +%T.%N | cut -c1-12)" "$*" >&2; }

# ours PID: the process runs, is not a zombie (reaping by PID 1 may lag) and was started with
# this DIR's ceph.conf, so a recycled PID is never signalled.
ours() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]] || return 1
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "--conf $conf "
}

# halt NAME...: TERM the named daemons (KILL after 15 s), waiting for each to be gone.
halt() {
  local name pid pids=() deadline
  for name in "$@"; do
    [[ -f $dir/run/$name.pid ]] || continue
    pid=$(<"$dir/run/$name.pid")
    rm -f "$dir/run/$name.pid"
    if [[ -n $pid ]] && ours "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  deadline=$((SECONDS + 15))
  for pid in "${pids[@]}"; do
    while ours "$pid" && ((SECONDS < deadline)); do sleep 0.05; done
    if ours "$pid"; then
      say "pid $pid still running after TERM; KILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}

stop_cluster() {
  halt rgw
  halt osd.0
  halt mon
}

if [[ $action == stop ]]; then
  stop_cluster
  exit 0
fi
[[ $action == start ]] || { say "unknown action $action"; exit 2; }

http_port=${3:?HTTP_PORT required}
mon_port=${4:?MON_PORT required}
access=${5:?ACCESS_KEY required}
secret=${6:?SECRET_KEY required}
https_port=${7:-}
cert=${8:-}
key=${9:-}

for port in "$http_port" "$mon_port" $https_port; do
  if ss -Hltn "sport = :$port" | grep -q .; then say "port $port has a listener"; exit 1; fi
  ((port < 32768)) || say "warning: port $port may be in the ephemeral range"
done
[[ -e $conf ]] && { say "$dir already holds a cluster"; exit 1; }
mkdir -p "$dir"/{run,log,crash,mon,osd.0,rgw}
trap 'say "start failed at line $LINENO; logs in $dir/log"; stop_cluster; exit 1' ERR

frontend="beast endpoint=127.0.0.1:$http_port tcp_nodelay=1"
if [[ -n $https_port ]]; then
  frontend+=" ssl_endpoint=127.0.0.1:$https_port ssl_certificate=$cert ssl_private_key=$key"
fi
fsid=$(</proc/sys/kernel/random/uuid)
cat >"$conf" <<CONF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$mon_port]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms mon client mode = crc
auth cluster required = none
auth service required = none
auth client required = none
run dir = $dir/run
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
mon cluster log file = $dir/log/cluster.log
crash dir = $dir/crash
paxos propose interval = 0.05
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
mon data avail warn = 1
mon data avail crit = 0
[mon.a]
mon data = $dir/mon
[osd.0]
osd objectstore = memstore
memstore device bytes = ${MEMSTORE_BYTES:-2147483648}
osd data = $dir/osd.0
[client.rgw.a]
rgw frontends = $frontend
rgw data = $dir/rgw
rgw thread pool size = 32
CONF
export CEPH_CONF=$conf

# spawn NAME CMD...: a foreground daemon in its own session, its pid in DIR/run/NAME.pid.
spawn() {
  local name=$1
  shift
  setsid "$@" --conf "$conf" -f </dev/null >>"$dir/log/$name.out" 2>&1 &
  echo $! >"$dir/run/$name.pid"
}

# await SECONDS NAME CMD...: poll CMD until it succeeds; give up early if daemon NAME died or
# logged a failed bind (radosgw lives on for a minute after one).
await() {
  local limit=$1 name=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ! ours "$(<"$dir/run/$name.pid")" || grep -qs 'failed to bind' "$dir/log/$name.out"; then
      say "$name died or could not bind:"
      tail -n 5 "$dir/log/$name.out" >&2 || true
      return 1
    fi
    ((SECONDS < deadline)) || { say "$name not ready after ${limit}s"; return 1; }
    sleep 0.1
  done
}

monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$dir/monmap" >/dev/null
ceph-mon --conf "$conf" --id a --mkfs --monmap "$dir/monmap" >/dev/null
spawn mon ceph-mon --id a
await 30 mon ceph --connect-timeout 5 mon stat

osd_uuid=$(</proc/sys/kernel/random/uuid)
osd_id=$(ceph osd new "$osd_uuid")
[[ $osd_id == 0 ]] || { say "unexpected osd id $osd_id"; false; }
ceph-osd --conf "$conf" --id 0 --mkfs --osd-uuid "$osd_uuid" >/dev/null 2>&1
spawn osd.0 ceph-osd --id 0
osd_up() { ceph osd stat -f json | grep -q '"num_up_osds":1,'; }
await 60 osd.0 osd_up

spawn rgw radosgw --id rgw.a
await 90 rgw curl -sf -m 2 -o /dev/null "http://127.0.0.1:$http_port/"
radosgw-admin user create --uid tests --display-name tests \
  --access-key "$access" --secret-key "$secret" >/dev/null

# The first bucket and object operations create rgw's index and data pools (2-3 s); pay that
# here rather than in the first test. curl's --aws-sigv4 omits x-amz-content-sha256, which rgw
# insists on, hence the explicit header.
s3() {
  curl -sf -m 30 -o /dev/null --aws-sigv4 aws:amz:us-east-1:s3 --user "$access:$secret" \
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@"
}
url=http://127.0.0.1:$http_port/ceph-rgw-warmup
s3 -X PUT "$url"
s3 -X PUT --data-binary warm "$url/object"
s3 -X DELETE "$url/object"
s3 -X DELETE "$url"
echo "http://127.0.0.1:$http_port" >"$dir/ready"
say "ready on http://127.0.0.1:$http_port${https_port:+ and https://127.0.0.1:$https_port}"
