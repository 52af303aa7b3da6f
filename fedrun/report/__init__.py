"""`fedrun report`: PNG plots and a markdown summary of a run, from its files alone."""
