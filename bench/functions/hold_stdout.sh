#!/bin/sh
# Function of the timeout scenario: a background grandchild of the watchdog keeps the
# function's stdout open for 30 s after the function itself is killed, so a watchdog that
# waits for the end of stdout answers late. The harness kills what is left when it stops
# the server.
sleep 30 &
sleep 30
