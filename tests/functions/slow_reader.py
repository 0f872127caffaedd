"""Copy stdin to stdout in small pieces with a pause before each read, like a slow consumer."""

import sys
import time

PIECE_SIZE = 16 * 1024
PAUSE_SECONDS = 0.002

while True:
    time.sleep(PAUSE_SECONDS)
    piece = sys.stdin.buffer.read1(PIECE_SIZE)
    if not piece:
        break
    sys.stdout.buffer.write(piece)
sys.stdout.buffer.flush()
