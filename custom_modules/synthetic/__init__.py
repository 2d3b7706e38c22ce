"""Inputs made here, torch-free: digits as people hand them to the app, and things that are not.

Training uses the non-digits (to learn to decline them); the benchmarks use all of it, from
MNIST's test digits and held-out fonts and seeds. Imports numpy, Pillow and `serving` only.
This file imports nothing: import the module you need.
"""
