"""`python -m hybridroute` runs the command line."""

from hybridroute.cli import main

main()
