"""The REST and WebSocket routes, one blueprint per area; actors.gateway assembles them."""
