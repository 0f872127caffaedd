#!/bin/sh
# Write to both streams and fail with the exit status given as the first argument.
echo "to stdout"
echo "to stderr" >&2
exit "${1:-3}"
