"""The composition root: the `xaso` command and the demo.

The only code that imports several programs, and each only when its
subcommand runs: `xaso agent` on a Pi loads nothing of the controller.
"""
