"""The grid search: one run (train, evaluate, export, benchmark, record), the local and Ray
backends, the results table, the choice of the shipped models and shipping them.

The top of the stack: imports training, export, serving and the contract; nothing in the
package imports it. Above it, `grid_search_mnist.py` runs it, and the app (`grid_tab.py`) reads
two of its torch-free modules, `results_table` and `history`. This file imports nothing: import
the module you need.
"""
