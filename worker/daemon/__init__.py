"""The worker daemon (`flowworker run`), one job per module.

Tasks go one way: the producer claims them (`producer`), the executor runs
their handlers and never writes (`executor`), the completer writes their
outcomes back (`completer`). `inflight` knows every task between its claim
and its written outcome (deadlines, cancels); `slots` bounds how many;
`isolation` runs a possibly poisonous task alone; `listener` holds the
LISTEN connection; `maintenance` the side jobs (heartbeats, finished runs,
signals, --drain); `shutdown` the stop sequence; `health` the HTTP endpoint;
`runtime` wires them; `db_asyncpg` is the asyncpg pool they share.
"""
