"""`python -m dramaturg`: the command line."""

from dramaturg._cli import main

main()
