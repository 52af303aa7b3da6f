"""`fedrun bench`: fedrun against TFF's local context and a plain TF loop, side by side; the
yardsticks (TFF's local context, the TF loop) live here too. The product never imports this package."""
