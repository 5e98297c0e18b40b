"""Load and drills against a served model: ``load`` (the one load generator: a send callable and
a tally), ``soak``, ``fuzz``, ``fault_drill``, ``replica_drill``, ``flood`` (slow and stalled
connections against a front door); ``report`` (the drills' contract: shared command-line flags,
the JSON report and its verdict from the drill's ``failures``)."""
