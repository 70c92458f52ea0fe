"""Worked example of dejavu-bench plugins: a measurement test, a training recipe, a dataset reader."""
