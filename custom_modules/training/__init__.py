"""Training: MNIST's files, the split and augmentation, the loop, evaluation and checkpoints.

Imports torch (except `mnist_data`, which is torch-free) and the model; nothing from export or
the grid. This file imports nothing: import the module you need.
"""
