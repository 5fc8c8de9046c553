"""The stages of one transaction (docs/design.md "One transaction"), one module each.

plan → verify → extract → stage → migrate → switch → register. The runner in
:mod:`atomicplug.transaction` sees only these small functions.
"""
