"""Chaos suite: does every line written to a container log end up stored exactly once?

Writers append kubelet-style CRI logs while the shipper, the aggregator and the
Kafka broker are killed with SIGKILL and started again and the files are rotated;
then the pipeline is drained and every stored record is counted by the unique
sequence number its line carries.

    .venv/bin/python -m benchmarks.chaos                       # every scenario, long form (30 cycles each)
    .venv/bin/python -m benchmarks.chaos --short               # quick form; exits 1 on any loss/dup/disagreement
    .venv/bin/python -m benchmarks.chaos spool shipper --cycles 10
    .venv/bin/python -m benchmarks.chaos none --no-rotate      # the harness's own baseline: no kills, no rotations

Run it from the repository root with the project's venv (it re-executes itself
with .venv/bin/python when the project does not import). Java and the broker jars
(``make kafka-fetch``) are needed for the Kafka scenarios; certificates come from
``var/certs`` (``--certs``).

What it writes
--------------
One writer thread per file (``--files``, default 8) under
``<scratch>/<scenario>/logs/pods/<ns>_<pod>_<uid>/app/0.log``, opened with
O_APPEND, at a steady total of ``--rate`` logical lines per second (default 2000,
spread evenly). Each logical line carries ``seq=<writer>:<n>`` once and ends with
``end=<writer>:<n>`` (so a record cut short or glued to another shows), as CRI
lines stamped with the real current time. The mix: plain text; JSON objects whose
``msg`` holds the seq; CRI partial lines (2-4 ``P`` pieces then an ``F`` piece,
sometimes with a complete line of the other stream between the pieces); Java stack
traces (``java.lang.IllegalStateException: boom seq=…`` then 3-8 ``\\tat …`` frames,
each its own CRI ``F`` line; the shipper runs with ``multiline = ["java"]``, so the
trace is one record holding the seq once). A writer finishes the logical line it
is on before it stops, so every counted line is complete in its file.

Rotations
---------
Every writer rotates its own file every ``--rotate`` seconds (15-40 s; 3-8 s with
``--short``), between two of its own writes:

- rename (kubelet): ``0.log`` → ``0.log.<YYYYMMDD-HHMMSS>`` (``-2``, ``-3`` … if the
  name is taken); the writer keeps writing into the renamed file through its old
  descriptor for 200-400 ms, then opens a fresh ``0.log``;
- copytruncate: ``0.log`` is copied to the first unused ``0.log.<N>``, then truncated
  to 0, and writing goes on through the same O_APPEND descriptor.

Because the writer itself rotates between its writes, no line is written between
the copy and the truncation: real copytruncate (logrotate) loses whatever the
application writes in that window, which no shipper can recover, and this suite
does not count that. Rotated files are never deleted or compressed: a file deleted
while the shipper is down is lost by deletion, which is not what this measures.
Writer 0's first rotation is a copytruncate, and a rename and a copytruncate are
forced at the end of the chaos phase if none happened, so every scenario with
rotations has both. ``--no-rotate`` turns rotation off.

Scenarios
---------
========== ========= ==============================================================
none       spool     no kills: writing for ``--quiet-s`` (30 s; 10 s with ``--short``);
                     with ``--no-rotate`` it is the harness's own baseline
spool      spool     kill -9 the shipper or the aggregator (random each cycle)
shipper    kafka     kill -9 the shipper
aggregator kafka     kill -9 the aggregator
broker     kafka     kill -9 the broker; one cycle is an outage of ``--outage-s``
                     (120 s; 20 s with ``--short``)
mixed      kafka     one of the three each cycle (the first three cycles are a
                     random order of all three, so each is hit when cycles >= 3)
========== ========= ==============================================================

``--transport`` overrides a scenario's transport. Each cycle waits 1-6 s (1-3 s
with ``--short``), kills, stays down 0.5-3 s (0.5-2 s) and starts the component
again; in about a third of the cycles the kill comes right after a rotation (a
writer is asked to rotate and signals through a threading.Event), and in about a
third a rotation happens while the component is down. A broker is started again
with ``kafka.sh up``, which returns once it answers over TLS, so it is down longer
than the drawn time by its start-up (a few seconds). A component that exited by
itself is noted and started again.

Kafka: a separate chaos broker (``deploy/kafka/kafka.sh up`` with its own free
ports, never 19093-19095, and ``KAFKA_DATA=<scenario>/kafka``), killed with kill -9
of ``$KAFKA_DATA/kafka.pid`` and stopped with ``kafka.sh down`` at the end (also on
errors and Ctrl-C). The topic is made with ``loglake-aggregator topics create``.

Drain and count
---------------
The writers stop; after ``multiline_flush_ms`` plus a second (so the open last
record of every file is flushed by the running shipper) the shipper and then the
aggregator get SIGTERM and exit; then ``loglake-shipper --once`` and
``loglake-aggregator --once`` run in rounds until a round stores nothing new. The
stored records are counted through ``query.connect(config)`` (the ``logs`` view,
every tier):

- written: logical lines the writers completed (their ledger, checked against a
  census of the ``seq=`` tokens in every file on disk: each must be there once);
- stored: rows; lost: seqs written but not stored; duplicated: rows beyond one per
  seq; orphans: rows with no seq (a piece of a line or of a stack trace stored on
  its own); mangled: rows whose body does not end with its own ``end=`` marker or
  holds more than one seq;
- ``loglake-aggregator verify``: exit code and last line; "agrees" means verify said
  OK exactly when lost == duplicated == 0;
- self-check: the same count over the ``logs`` view minus one stored row must show
  one more lost line, and over the view plus a second copy of one source file's
  rows must show that many more duplicates.

The first lost/duplicated/orphan records (writer, seq, kind, the file and offset
they were written at, the stored copies' paths and offsets) are kept in the JSON
for debugging, with lost lines summarised by the fate of their file
(``live``, ``renamed``, ``copied``: the copytruncate copy) and kind.

Output: a Markdown table on stdout and ``--json`` (default
``benchmarks/results/chaos.json``) with every figure, the command line, and the
git commit and uncommitted files of shipper/, aggregator/, schemas/ and query/ at
the start of each scenario. ``--bin DIR`` runs other entry points (e.g. wrappers
that import another revision) against the same harness. A
scenario "fails" on loss, duplicates, orphans, mangled records, verify disagreeing,
a census or self-check mismatch, or a drain that did not finish; with ``--short``
the exit status is 1 when any scenario fails.

Everything lives under ``--scratch`` (default ``var/chaos``), which is removed at
the start of a run (only if it holds this suite's marker file). Every process the
suite starts is killed at exit (try/finally and atexit); every wait has a timeout.
Uses only the standard library and the project itself.
"""

from __future__ import annotations

# The package: options (Options, the paths they default to), writers (the CRI writers and their
# rotations), components (the processes, the chaos broker, loglake.toml), count (drain, verify, count by
# seq, census, self-check), scenarios (the scenario table and the cycle loop), report (problems, the
# table, the JSON) and __main__ (the command line).
from .options import BIN, ROOT, Options
from .report import describe, problems, table
from .scenarios import DEFAULT_SCENARIOS, SCENARIOS, run_scenario

__all__ = ["BIN", "DEFAULT_SCENARIOS", "ROOT", "SCENARIOS", "Options", "describe", "problems", "run_scenario",
           "table"]
