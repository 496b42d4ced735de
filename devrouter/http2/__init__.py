"""HTTP/2: python-hyper h2 framing in front of the HTTP/1 engines (see connection, bridge)."""
