#!/usr/bin/env bash
# metrics_prometheus.sh: Debian's Prometheus server scrapes a live coordinator and two workers
# (--metrics-listen) every second during a run, and its HTTP API (/api/v1/query) must show
# shoal_run_step increasing, per-worker series from the coordinator (label worker="mp1") and
# from the workers themselves, and the checkpoint series. The coordinator's page is also checked
# directly: HELP/TYPE for every family, text format 0.0.4, 404 off /metrics; and every query of
# the Grafana dashboard (ops/grafana/shoal.json) must parse and name only scraped series.
# Skips (77) without /usr/bin/prometheus. Usage: metrics_prometheus.sh BINDIR
set -u
. "$(dirname "$0")/ctl_lib.sh" "$1" "mp"
prom=$(command -v prometheus || true)
[ -n "$prom" ] || { echo "prometheus is not installed (apt-get install prometheus): skip"; exit 77; }
command -v curl >/dev/null || { echo "no curl: skip"; exit 77; }
[ -r /usr/share/games/fortunes ] || { echo "no /usr/share/games/fortunes: skip"; exit 77; }
export SHOAL_INSECURE=1 # plaintext TCP on loopback (CURVE is another test's business)

read -r cport mport pport w1port w2port < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(5)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
cluster_port=$cport
"$bindir/shoal-coordinator" --state-dir "$tmp/coord" --listen "tcp://127.0.0.1:$cport" \
    --control "$SHOAL_CONTROL" --metrics-listen "127.0.0.1:$mport" >"$tmp/coord.log" 2>&1 &
pids+=($!)
start_worker mp 1 --metrics-listen "127.0.0.1:$w1port"
start_worker mp 2 --metrics-listen "127.0.0.1:$w2port"

cat >"$tmp/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: shoal-coordinator
    static_configs:
      - targets: ['127.0.0.1:$mport']
  - job_name: shoal-worker
    static_configs:
      - targets: ['127.0.0.1:$w1port', '127.0.0.1:$w2port']
YAML
"$prom" --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/prom" \
    --web.listen-address="127.0.0.1:$pport" --log.level=warn >"$tmp/prom.log" 2>&1 &
pids+=($!)

# the coordinator's own page
page() { curl -sf "http://127.0.0.1:$mport/metrics" >"$tmp/page"; }
poll_until 20 page || err "no /metrics on the coordinator: $(tail -5 "$tmp/coord.log")"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$mport/nothing")
[ "$code" = 404 ] || err "GET /nothing answered $code, expected 404"
ctype=$(curl -s -o /dev/null -w '%{content_type}' "http://127.0.0.1:$mport/metrics")
[ "$ctype" = "text/plain; version=0.0.4; charset=utf-8" ] || err "content type '$ctype'"

long_run_spec "$tmp/run.yaml" pm
cat >>"$tmp/run.yaml" <<YAML
checkpoint:
  every_steps: 5
parallel:
  data_parallel: 1 # one cell, one spare: the data plane is not what this test is about
YAML
n_registered() {
    "$bin" workers --json 2>/dev/null | python3 -c \
        "import json,sys; w=json.load(sys.stdin)['workers']; sys.exit(0 if len(w) >= $1 else 1)"
}
poll_until 30 n_registered 2 || err "the 2 workers did not register"
expect 0 submit "$tmp/run.yaml"

# query EXPR PYTHON-CONDITION: the instant query's result list (`r`) satisfies the condition
query() {
    curl -sf --get "http://127.0.0.1:$pport/api/v1/query" --data-urlencode "query=$1" \
        >"$tmp/q" 2>/dev/null &&
        python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["status"] == "success", d
r = d["data"]["result"]
v = [float(x["value"][1]) for x in r]
sys.exit(0 if eval(sys.argv[2]) else 1)' "$tmp/q" "$2"
}
# shoal_run_step rises between scrapes: its range over the last 30 s spans more than a step
poll_until 60 query 'max_over_time(shoal_run_step{run="pm"}[30s]) - min_over_time(shoal_run_step{run="pm"}[30s])' \
    'len(v) == 1 and v[0] >= 2' || err "shoal_run_step did not increase in Prometheus: $(cat "$tmp/q")"
query 'shoal_run_state{run="pm",state="running"}' 'v == [1.0]' ||
    err "run state series: $(cat "$tmp/q")"
# per worker, scraped from the coordinator
poll_until 30 query 'shoal_worker_heartbeat_age_seconds{job="shoal-coordinator"}' \
    'sorted(x["metric"]["worker"] for x in r) == ["mp1", "mp2"] and all(0 <= a < 3 for a in v)' ||
    err "per-worker heartbeat age: $(cat "$tmp/q")"
poll_until 30 query 'shoal_worker_step_seconds{job="shoal-coordinator"} > 0' 'len(v) >= 1' ||
    err "per-worker step time: $(cat "$tmp/q")"
poll_until 30 query 'shoal_worker_state{job="shoal-coordinator",state="active"}' \
    'v == [1.0, 1.0]' || err "per-worker state: $(cat "$tmp/q")"
# per worker, scraped from the workers themselves: the trainer's counter rises
poll_until 30 query 'increase(shoal_worker_steps_total{job="shoal-worker"}[20s]) > 0' 'len(v) >= 1' ||
    err "a worker's own steps_total did not rise: $(cat "$tmp/q")"
# checkpoints (every 5 steps)
poll_until 60 query 'shoal_checkpoint_bytes{run="pm"}' 'len(v) == 1 and v[0] > 1000' ||
    err "checkpoint bytes: $(cat "$tmp/q")"
query 'shoal_checkpoint_age_seconds{run="pm"}' 'len(v) == 1 and 0 <= v[0] < 60' ||
    err "checkpoint age: $(cat "$tmp/q")"
query 'up' 'len(v) == 3 and v == [1.0, 1.0, 1.0]' || err "a target is down: $(cat "$tmp/q")"

# the Grafana dashboard: every query parses in this Prometheus and every shoal_ series it names
# was scraped
dash="$(dirname "$0")/../../ops/grafana/shoal.json"
curl -sf --get "http://127.0.0.1:$pport/api/v1/label/__name__/values" >"$tmp/names" ||
    err "no series names from Prometheus"
python3 - "$dash" "$tmp/names" "http://127.0.0.1:$pport" <<'PY' || err "the dashboard names series or queries that do not work"
import json, re, sys, urllib.parse, urllib.request
d = json.load(open(sys.argv[1]))
have = set(json.load(open(sys.argv[2]))["data"])
exprs = [t["expr"] for p in d["panels"] for t in p["targets"]]
exprs += [a["expr"] for a in d["annotations"]["list"]]
bad = []
for e in exprs:
    q = e.replace('"$run"', '".*"').replace('"$coordinator_job"', '"shoal-coordinator"')
    for name in re.findall(r"\b(shoal_[a-z0-9_]+)", q):
        if name not in have:
            bad.append("%s: %s never scraped" % (e, name))
    url = sys.argv[3] + "/api/v1/query?" + urllib.parse.urlencode({"query": q})
    try:
        r = json.load(urllib.request.urlopen(url, timeout=10))
        if r["status"] != "success":
            bad.append("%s: %s" % (e, r))
    except Exception as x:
        bad.append("%s: %s" % (e, x))
print("\n".join(bad))
sys.exit(1 if bad else 0)
PY

# the page itself: every sample's family has HELP and TYPE, names follow the conventions
page || err "no page at the end"
python3 - "$tmp/page" <<'PY' || err "exposition format: see above"
import re, sys
help_, type_, bad = set(), {}, []
for ln in open(sys.argv[1]):
    ln = ln.rstrip("\n")
    if ln.startswith("# HELP "):
        help_.add(ln.split()[2])
    elif ln.startswith("# TYPE "):
        _, _, name, t = ln.split(" ", 3)
        type_[name] = t
    elif ln:
        m = re.match(r'^([a-z_][a-z0-9_]*)(\{[a-z_]+="(?:[^"\\]|\\.)*"(?:,[a-z_]+="(?:[^"\\]|\\.)*")*\})? (\S+)$', ln)
        if not m:
            bad.append("unparsable: " + ln)
            continue
        name = m.group(1)
        float(m.group(3).replace("Inf", "inf"))
        if name not in help_ or name not in type_:
            bad.append("no HELP/TYPE before " + name)
        if not name.startswith("shoal_"):
            bad.append("not shoal_: " + name)
        if type_.get(name) == "counter" and not name.endswith("_total"):
            bad.append("counter without _total: " + name)
for need in ("shoal_run_step", "shoal_run_loss", "shoal_run_tokens_per_second",
             "shoal_run_plan_generation", "shoal_worker_comm_wait_ratio",
             "shoal_checkpoint_duration_seconds", "shoal_checkpoint_replicas",
             "shoal_messages_dropped_total", "shoal_workers_quarantined",
             "shoal_messages_rate_limited_total", "shoal_messages_bad_total",
             "shoal_quarantines_total"):
    if need not in type_:
        bad.append("missing family " + need)
print("\n".join(bad))
sys.exit(1 if bad else 0)
PY
expect 0 cancel pm
# the workers leave while the coordinator still answers their Leave (cleanup stops it too)
kill -TERM "${worker_pid[1]}" "${worker_pid[2]}"
wait "${worker_pid[1]}" "${worker_pid[2]}"
[ $fail -eq 0 ] || { echo "--- coordinator log"; tail -20 "$tmp/coord.log"; echo "--- prometheus log"; tail -20 "$tmp/prom.log"; }
exit $fail
