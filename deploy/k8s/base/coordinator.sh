#!/bin/sh
# The coordinator's entrypoint: `fedrun run` over the workers, in $RUN_DIR on the results volume.
# A coordinator pod that replaces a preempted or evicted one finds the run there and continues it
# from its last checkpoint (--resume); fedrun refuses --out over an existing run. Arguments are
# passed on to `fedrun run`.
#
# Environment: RUN_DIR; WORKERS, the number of workers; for the static backend also
# WORKER_STATEFULSET, WORKER_SERVICE, WORKER_PORT and POD_NAMESPACE, from which the workers'
# addresses are made: the static backend takes one host:port per worker, not a pattern.
set -eu

config="$(dirname "$0")/run.toml"

if [ -n "${WORKER_SERVICE:-}" ]; then
  addresses=""
  i=0
  while [ "$i" -lt "$WORKERS" ]; do
    addresses="${addresses:+$addresses,}$WORKER_STATEFULSET-$i.$WORKER_SERVICE.$POD_NAMESPACE.svc:$WORKER_PORT"
    i=$((i + 1))
  done
  set -- "$@" --worker-addresses "$addresses"
fi

if [ -f "$RUN_DIR/config.toml" ]; then
  echo "coordinator.sh: $RUN_DIR holds a run: resuming it" >&2
  exec fedrun run --resume "$RUN_DIR" --config "$config" --workers "$WORKERS" "$@"
fi
exec fedrun run --out "$RUN_DIR" --config "$config" --workers "$WORKERS" "$@"
