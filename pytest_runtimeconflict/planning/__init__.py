"""Planning: from a scan to a plan (sequences and their search, load-mode variants, targets, workloads, coverage, shards)."""
