"""Harnesses shared by the tests and bench/: never imported by the shipped packages."""
