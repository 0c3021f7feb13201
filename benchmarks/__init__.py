"""Benchmarks, run by hand (not in CI): `python benchmarks/movielens100k.py --data DIR`."""
