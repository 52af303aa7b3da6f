"""The `fedrun` program: it takes SIGINT and SIGTERM before it imports anything heavy (gRPC,
TensorFlow), so a Ctrl-C at any moment is a stop request, then leaves without waiting on
library finalizers (fedrun.stopping)."""


def main() -> None:
    from fedrun.stopping import STOP, leave

    with STOP.handling():
        from fedrun.cli import main as run_command

        code = run_command()
    leave(code)
