#!/bin/sh
# Start a background process in a session of its own, so it outlives the request, and exit.
setsid sleep 300 > /dev/null 2>&1 < /dev/null &
child=$!
# Exit only once the child leads its own session (field 6 of /proc/PID/stat), or the watchdog
# would kill it with this process group.
while [ -e "/proc/$child" ] && [ "$(cut -d ' ' -f 6 "/proc/$child/stat")" != "$child" ]; do
    :
done
echo done
