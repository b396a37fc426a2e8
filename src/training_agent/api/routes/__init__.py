"""One module per noun: training runs, and the service's own health."""
