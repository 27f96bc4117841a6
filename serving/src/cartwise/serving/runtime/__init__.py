"""The serving runtime: model holders, the prediction cache, online features and the ML client.

Nothing here imports Ray at import time except ``client.HandleMLClient`` when it is used.
"""
