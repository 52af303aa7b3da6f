"""Local workers: TFF's worker_binary as child processes of this one, each in private namespaces
where the machine allows it."""
