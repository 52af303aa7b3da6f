"""`python -m fedrun`: the `fedrun` command."""

from fedrun.program import main

main()
