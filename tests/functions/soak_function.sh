#!/bin/sh
# The function behind the soak and fault tests: the request path selects the behaviour.
# SOAK_BIG_OUTPUT names a file to send back for /big; SOAK_ORPHAN_SECONDS is the lifetime of
# the background process that /orphan leaves behind, so the tests can tell it apart by its
# command line.
case "$Http_Path" in
/echo)
    exec cat
    ;;
/fail)
    echo "failing on purpose"
    exit 3
    ;;
/timeout)
    # The grandchild keeps stdout open, so only killing the whole group ends the request.
    sleep 30 &
    echo started
    exec sleep 30
    ;;
/orphan)
    setsid sleep "${SOAK_ORPHAN_SECONDS:-4.321}" > /dev/null 2>&1 < /dev/null &
    orphan=$!
    # Exit only once the background process has left this process group (setsid) and runs
    # sleep, or the watchdog kills it with the group, and the tests could take it for a
    # function process while it is still called setsid.
    expected="sleep ${SOAK_ORPHAN_SECONDS:-4.321} "
    while [ -e "/proc/$orphan" ]; do
        [ "$(tr '\0' ' ' < "/proc/$orphan/cmdline")" = "$expected" ] && break
    done
    echo done
    ;;
/ignore)
    echo ignored
    ;;
/big)
    exec cat "$SOAK_BIG_OUTPUT"
    ;;
/slow)
    exec python3 "$(dirname "$0")/slow_reader.py"
    ;;
/stderr)
    # Floods stderr with SOAK_STDERR_BYTES bytes, then writes one line to stdout.
    head -c "${SOAK_STDERR_BYTES:-1048576}" /dev/zero | tr '\0' 'e' >&2
    echo flooded
    ;;
*)
    echo "unknown path $Http_Path" >&2
    exit 64
    ;;
esac
