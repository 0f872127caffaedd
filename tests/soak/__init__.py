"""The soak workload: a raw HTTP/1.1 client, the request mix, /proc sampling and the checks.

`tests/test_soak.py` runs a short profile in the test suite; `scripts/soak` runs the long profile
through `python -m tests.soak` and writes its figures under bench/results/.
"""
