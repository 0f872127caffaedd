#!/bin/sh
# Start a background process in a session of its own, so it outlives the request, and exit.
setsid sleep 300 > /dev/null 2>&1 < /dev/null &
echo done
