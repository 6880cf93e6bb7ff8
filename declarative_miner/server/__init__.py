"""The HTTP side: a plain ASGI app, request authentication, and the priority scheduler."""
