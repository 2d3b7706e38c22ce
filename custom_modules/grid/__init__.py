"""The grid search: one run (train, evaluate, export, benchmark, record), the local and Ray
backends, the results table, the choice of the shipped models and shipping them.

The top of the stack: imports training, export, serving and the contract; nothing imports it
but `grid_search_mnist.py`. This file imports nothing: import the module you need.
"""
