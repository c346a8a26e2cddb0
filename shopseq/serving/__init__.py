"""Real-time serving: a FastAPI app over a trained run and the workspace's event store.

``state.ServiceState`` holds the model (torch or ONNX backend), the per-user recent histories
(loaded once from the store, plus an in-memory overlay of events posted since), item metadata and
recent popularity for cold start; ``app.create_app`` wires it to HTTP; ``client`` starts, queries
and stops a service from Python (the demo uses it).
"""
