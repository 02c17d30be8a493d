"""The HTTP layer: routes, middlewares, request parsing and response shaping."""
