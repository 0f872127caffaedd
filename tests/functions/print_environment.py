"""Print the Http_* variables as one JSON object, each byte of a value as one latin-1 character."""

import json
import os
import sys

variables = {
    name.decode("latin-1"): value.decode("latin-1")
    for name, value in os.environb.items()
    if name.startswith(b"Http_")
}
sys.stdout.write(json.dumps(variables, sort_keys=True))
