"""System tests: a real `linkd serve` (supervisor and workers) attacked from outside.

Only public entry points are used: the `python -m linkd serve` command, HTTP, the
database files on disk and /proc. The fakes of the platforms run in the test process.
"""
