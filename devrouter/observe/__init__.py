"""What the router measures and shows about itself: per-route counters and latency
histograms (metrics, histogram), the Prometheus exposition (prometheus), the access log
(accesslog), and the backends' health probes (health)."""
