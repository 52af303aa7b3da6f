"""`fedrun sweep`: a grid of runs on shared workers, one results table, and the figures of
straggler experiments. The product's runs are ordinary runs; the sweep only assembles them."""
