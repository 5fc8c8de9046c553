"""The resident server: a warm process that forks one child per CLI command.

docs/design.md "The resident server" (issue 14): a one-shot ``atomicplug`` command
spends most of a small install starting Python and importing ~270 modules. After
``atomicplug resident start``, the command line connects to a Unix socket, hands
over its argv, working folder, environment, umask and its stdin/stdout/stderr
descriptors, and a child forked from the already-warm server runs the command
exactly as the one-shot process would (same ``cli.main``, same one-line errors and
exit codes). The server itself never runs a transaction and keeps no state
between commands: each command is a fresh process as before, only born warm.

Nothing here is imported by a one-shot command that finds no server: the client
(:mod:`atomicplug.resident.client`) uses the standard library alone.
"""
