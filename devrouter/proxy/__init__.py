"""The aiohttp engine: the handler that implements every rule of the proxy (handler) and its
WebSocket bridge (websocket). The fast path (devrouter.fast) hands it every request it does
not take, so hard cases have one implementation."""
