"""Load-testing harness for watchdogs: ``python -m bench run`` (see bench/README.md).

It starts any watchdog as an external command and imports nothing from the ``watchdog``
package, so the same scenarios can run against other implementations.
"""
