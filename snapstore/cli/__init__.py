"""The command-line interface: the only place that prints or exits."""
