#!/bin/sh
# An OSCAR service script: prints its input inside a speech bubble above a cow.
# With INPUT_TYPE=json the input file contains a JSON object, and the string in its "message" field
# is printed; otherwise the whole input file is printed. It needs only sh and awk.
set -eu

# Print the first string value of a "message" key, with the escapes \" \\ \/ \n \t decoded and
# \uXXXX kept as written. Exits 1 when the file has no such key.
json_message() {
    LC_ALL=C awk '
        { text = text $0 "\n" }
        END {
            if (!match(text, /"message"[[:space:]]*:[[:space:]]*"/)) {
                print "no \"message\" string in the JSON input" | "cat 1>&2"
                exit 1
            }
            message = ""
            for (i = RSTART + RLENGTH; i <= length(text); i++) {
                c = substr(text, i, 1)
                if (c == "\"")
                    break
                if (c == "\\") {
                    i++
                    c = substr(text, i, 1)
                    if (c == "n") c = "\n"
                    else if (c == "t") c = "\t"
                    else if (c == "u") c = "\\u"
                    else if (c == "r" || c == "b" || c == "f") c = ""
                }
                message = message c
            }
            print message
        }' "$1"
}

# Draw a bubble around the lines of standard input. Widths count UTF-8 characters, not bytes.
bubble() {
    LC_ALL=C awk '
        function width(s,    copy) {
            copy = s
            return length(s) - gsub(/[\200-\277]/, "", copy)
        }
        function repeat(c, n,    s) {
            s = ""
            while (n-- > 0) s = s c
            return s
        }
        {
            gsub(/\t/, "    ")
            lines[NR] = $0
            if (width($0) > longest) longest = width($0)
        }
        END {
            if (NR == 0) lines[++NR] = ""
            print " " repeat("_", longest + 2)
            for (n = 1; n <= NR; n++) {
                if (NR == 1) { left = "<"; right = ">" }
                else if (n == 1) { left = "/"; right = "\\" }
                else if (n == NR) { left = "\\"; right = "/" }
                else { left = "|"; right = "|" }
                padding = repeat(" ", longest - width(lines[n]))
                print left " " lines[n] padding " " right
            }
            print " " repeat("-", longest + 2)
        }'
}

if [ "${INPUT_TYPE:-}" = "json" ]; then
    message=$(json_message "$INPUT_FILE_PATH")
else
    message=$(cat "$INPUT_FILE_PATH")
fi

printf '%s\n' "$message" | bubble
cat <<'COW'
   \
    \   }__{
        (oo)\_____________
        (..) \            )~
              ||--------||
              ^^        ^^
COW
