"""HTTPS on the router's port, with devrouter's own local certificate authority: the CA and
the leaves it issues, kept on disk (ca), and the store of TLS contexts the listener picks from
by SNI (certs)."""
