"""Helpers shared by the tests: processes and how to wait for them, runs of the coordinator,
data files in users' formats, Prometheus scraping. Test files import from here, never from
each other."""
