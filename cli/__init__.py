"""`escalation-risk`, the one command line: training's commands and the service's, side by side.

This package sits above `training` and `serving` (which never import each other): `cli.main`
assembles both groups' commands; `cli.common` holds what every command shares.
"""
