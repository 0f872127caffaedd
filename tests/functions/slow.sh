#!/bin/sh
# Record the pid, then run for the number of seconds given as the first argument.
echo "$$" > "$TMPDIR/pids"
exec sleep "${1:-300}"
