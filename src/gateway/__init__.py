"""The websocket gateway: session logic as a pure state machine, and a thin server around it.

Dashboards subscribe to `kpi:update` for their tenant and receive a snapshot, then updates fanned
out through Redis pub/sub (DESIGN section 8). Built in the gateway issue.
"""
