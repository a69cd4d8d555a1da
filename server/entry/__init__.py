"""What every AIService call goes through on its way in, whichever door it came by.

gRPC's interceptors and the HTTP door (`doors/`) each read their own request, then take
the same steps here: the call's record and request id (`calls`), who is calling
(`authentication`), its request rate (`rate`). Nothing here knows a transport: each
door puts the refusals (`GatewayError`s) in its own terms.
"""
