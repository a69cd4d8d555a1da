"""What travels with one call through every stage: its record, filled in as it happens
and handed to observers (metrics, traces, audit) at four moments."""
