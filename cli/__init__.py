"""The ``mmr1`` command: the top of the import graph (schemas <- mmr1 <- tasks <- flows <- cli).

Inspection commands need only the library; flow commands import ``flows``
lazily, after their config and inputs were checked (``main.py``).
"""
