"""What operators see: logs now; metrics, traces and the audit log beside them."""
