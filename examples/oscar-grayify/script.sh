#!/bin/sh
# An OSCAR service script: converts a colour image in plain PPM format (P3) to a grayscale image in
# plain PGM format (P2), written to $TMP_OUTPUT_DIR/<input name>.pgm. Gray is the ITU-R BT.601
# luma 0.299 R + 0.587 G + 0.114 B, rounded. It needs only sh and awk, no image library.
set -eu

output="$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH").pgm"

awk '
    function fail(message) {
        print "invalid input: " message | "cat 1>&2"
        failed = 1
        exit 1
    }
    {
        sub(/#.*/, "")
        for (i = 1; i <= NF; i++) {
            tokens++
            if (tokens == 1 && $i != "P3") fail("not a plain PPM image (P3)")
            else if (tokens == 2) width = $i + 0
            else if (tokens == 3) height = $i + 0
            else if (tokens == 4) {
                if (width < 1 || height < 1) fail("the width and height must be at least 1")
                printf "P2\n%d %d\n%d\n", width, height, $i
            } else if (tokens > 4) {
                rgb[(tokens - 5) % 3] = $i
                if ((tokens - 5) % 3 == 2) {
                    pixel++
                    gray = int((299 * rgb[0] + 587 * rgb[1] + 114 * rgb[2] + 500) / 1000)
                    printf "%d%s", gray, (pixel % width == 0) ? "\n" : " "
                }
            }
        }
    }
    END {
        if (!failed && (tokens < 4 || pixel != width * height || (tokens - 4) % 3 != 0))
            fail("expected " width * height " pixels of 3 values after the header")
    }' "$INPUT_FILE_PATH" >"$output"
