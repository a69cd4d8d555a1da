"""Who is calling: the `Caller` every later stage reads, and the key ring that finds it."""
