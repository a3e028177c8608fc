"""The audit trail: entries of the hash-chained log and their verification, and the
group-committing writer."""
