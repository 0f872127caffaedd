#!/bin/sh
# Leave a grandchild that holds stdout open, record both pids, and never finish.
echo "$$" > "$TMPDIR/pids"
sleep 300 &
echo "$!" >> "$TMPDIR/pids"
echo started
sleep 300
