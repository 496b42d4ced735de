"""HTTP/1 without I/O: the grammar, the header policy and the decisions about request and
response heads that both engines share. Bytes in, a plan (or a hand-off) out; nothing here
reads a socket, so every rule is tested by feeding it bytes (tests/http1/).

- `grammar`: the patterns a head must match, as named fragments.
- `policy`: which fields the router drops, sets or refuses to forward (one list for the
  aiohttp engine and the fast path).
- `fields`: small operations on a field block (Connection tokens, cutting lines, the
  forwarding fields the router adds).
- `request_head`: a request head -> a `RequestPlan` for the fast path, or a hand-off to the
  aiohttp engine, which decides every hard case.
- `response_head`: a response head -> a `ResponsePlan`, or the parser's, or an upgrade.
- `answers`: the router's own canned responses, as bytes.
"""
