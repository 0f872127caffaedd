#!/bin/sh
# Count the lines, words and bytes of the request body.
set -eu
wc | awk '{ printf "{\"lines\": %d, \"words\": %d, \"bytes\": %d}\n", $1, $2, $3 }'
