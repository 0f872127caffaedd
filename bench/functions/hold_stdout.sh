#!/bin/sh
# Function of the timeout scenario: a background grandchild of the watchdog keeps the
# function's stdout open until 30 s after the start, even when the function itself is
# killed earlier, so a watchdog that waits for the end of stdout responds late. The harness
# kills what is left when it stops the server.
sleep 30 &
sleep 30
