"""Load and drills against a served model: ``load`` (the one load generator: a send callable and
a tally), ``soak``, ``fuzz``, ``fault_drill``, ``replica_drill``, ``flood`` (slow and stalled
connections against a front door); ``report`` (the drills' shared command-line flags and JSON
verdict)."""
