# Shared set-up of the benchmark scripts (sourced, not run).
#
# bench_setup PREFIX: makes sure GNU time is there (for peak RSS), raises the
# CPU priority of the measured commands, creates the scratch folder $scratch
# (BENCH_DIR, or a new /var/tmp/PREFIX.XXXXXX) and deletes it on exit.
#
# On a shared machine every measured command gets the same raised priority
# (BENCH_NICE, default -10 when root; 0 turns it off): `${prio[@]}` is the
# nice prefix for each command, and this script's session (autogroup) is
# raised too, since Linux shares the CPUs fairly between sessions whatever
# their nice values. The session's old value is restored on exit.
bench_setup() {
    if [ ! -x /usr/bin/time ]; then
        echo "installing GNU time (for peak RSS)" >&2
        if [ "$(id -u)" = 0 ]; then
            (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time) >&2
        else
            sudo apt-get install -y time >&2
        fi
    fi
    prio=()
    old_group_nice=
    if [ "$(id -u)" = 0 ] && [ "${BENCH_NICE:--10}" != 0 ]; then
        prio=(nice -n "${BENCH_NICE:--10}")
        if [ -w /proc/self/autogroup ]; then
            old_group_nice=$(sed -n 's/.* nice //p' /proc/self/autogroup)
            echo "${BENCH_NICE:--10}" >/proc/self/autogroup || true
        fi
    fi
    scratch=${BENCH_DIR:-$(mktemp -d "/var/tmp/$1.XXXXXX")}
    mkdir -p "$scratch"
    trap bench_cleanup EXIT
}

bench_cleanup() {
    rm -rf "$scratch"
    if [ -n "${old_group_nice:-}" ]; then
        echo "$old_group_nice" >/proc/self/autogroup || true
    fi
}
