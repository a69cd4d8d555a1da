"""Request policy: what a request must look like before it may cost an upstream call."""
