"""Seeing what a model learned: run records, HTML reports, surprisal and neuron views.

runs.py and html.py read and render without torch (a report of curves and
settings needs only the JSON a run wrote); surprisal.py and neurons.py run a
model; plots.py needs matplotlib (the `report` extra), tensorboard.py the
`tensorboard` extra; terminal.py builds rich renderables for the CLI to print.
"""
