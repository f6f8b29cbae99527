#!/usr/bin/env bash
# CPU per request of running proxies: runs wrk against 127.0.0.1:PORT and divides the
# user and system time of PID... (from /proc/<pid>/stat) by the requests wrk made.
#   bench/http/cpu.sh PORT PID...      # DUR=10s by default; 64 connections, GET /v1/models
port=$1; shift
st() { local u=0 s=0; for p in "$@"; do read -r a b < <(awk '{print $14, $15}' /proc/$p/stat); u=$((u+a)); s=$((s+b)); done; echo $u $s; }
read u0 s0 < <(st "$@")
out=$(wrk -t2 -c64 -d${DUR:-10s} http://127.0.0.1:$port/v1/models)
read u1 s1 < <(st "$@")
n=$(echo "$out" | awk '/requests in/ {print $1}')
rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
tck=$(getconf CLK_TCK)
awk -v u=$((u1-u0)) -v s=$((s1-s0)) -v n=$n -v t=$tck -v r=$rps 'BEGIN {printf "req/s %s  user %.2f us  sys %.2f us  total %.2f us\n", r, u/t/n*1e6, s/t/n*1e6, (u+s)/t/n*1e6}'
